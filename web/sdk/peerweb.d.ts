// Type declarations for the peerweb browser SDK (/sdk/peerweb.js).

export interface JoinOptions {
  /** Metadata (a JSON object, at most 1 KiB) shown to the other members. */
  meta?: Record<string, unknown>;
  /** ICE servers to use instead of the server's `GET /api/ice`. */
  iceServers?: RTCIceServer[];
  /** Extra RTCConfiguration fields, e.g. `{ iceTransportPolicy: 'relay' }`. */
  rtcConfig?: Partial<RTCConfiguration>;
  /** Signaling reconnect backoff in ms (default 250 doubling to 8000, with jitter). */
  reconnect?: { minDelay?: number; maxDelay?: number };
  /**
   * Tell the server how each peer connection fares, for its `/metrics` and `/status`:
   * connected or failed, time to connect, the kind of path (host, srflx, prflx, relay and the
   * relay's transport), ICE restarts and whether they recovered — no addresses, no room
   * names. Default true; `false` sends nothing.
   */
  reportConnectivity?: boolean;
  /**
   * Access token for a server started with `--auth-secret`, or a function giving one (called
   * for every signaling connection and TURN credential fetch, so that an expiring token can be
   * replaced; calls made at the same time share one). A refused token rejects `join` with code
   * `unauthorized`.
   */
  token?: string | (() => string | Promise<string>);
  /**
   * Join straight into a call: the media is taken and the call started before the join, so
   * every connection's first offer carries our tracks. `join` rejects if the media is refused.
   * The call is `room.activeCall`.
   */
  call?: CallOptions;
  /**
   * Connect only to members whose `meta.role` is this (a camera's viewers connect to the
   * camera, not to each other, and learn nothing of each other). Default: every member.
   */
  onlyRole?: string;
  /**
   * Media this member only receives (a camera's viewer): a receive-only line of each kind in
   * every first offer it makes, so the first answer can carry the other side's media.
   */
  receive?: { audio?: boolean; video?: boolean };
}

export type SignalingState = 'connecting' | 'open' | 'reconnecting' | 'closed';
export type PathType = 'host' | 'srflx' | 'prflx' | 'relay';

export interface Path {
  type: PathType;
  local: string;
  remote: string;
  protocol: string;
  relayProtocol: string | null;
  /** Seconds, from the selected candidate pair's currentRoundTripTime. */
  rtt: number | null;
}

export type Data = string | ArrayBuffer | ArrayBufferView | Blob;

export class PeerwebError extends Error {
  /** Protocol error code (`room-full`, `rate-limited`, ...) or SDK code (`channel-not-open`, ...). */
  code: string;
}

export interface MessageEvent extends Event { peer: Peer; data: string | ArrayBuffer; channel: Channel }
export interface PeerEvent extends Event { peer: Peer }
export interface SignalingEvent extends Event { state: SignalingState }
export interface ErrorEvent extends Event { error: PeerwebError }

export class Room extends EventTarget {
  readonly name: string;
  /** This peer's id; stable across signaling reconnects. */
  readonly id: string;
  readonly peers: Map<string, Peer>;
  readonly signalingState: SignalingState;
  /** Send to every peer on its default channel (queued until open). */
  broadcast(data: Data): void;
  /** Start a call: our camera and microphone go to every peer, now and later. */
  call(options?: CallOptions): Promise<Call>;
  /** The call this room is in, or null. */
  readonly activeCall: Call | null;
  /** Leave the room (hanging up its call). */
  leave(): void;
  addEventListener(type: 'peer' | 'peerleft', l: (e: PeerEvent) => void): void;
  addEventListener(type: 'message', l: (e: MessageEvent) => void): void;
  addEventListener(type: 'signaling', l: (e: SignalingEvent) => void): void;
  addEventListener(type: 'error', l: (e: ErrorEvent) => void): void;
}

export class Peer extends EventTarget {
  readonly id: string;
  meta: Record<string, unknown> | null;
  readonly pc: RTCPeerConnection;
  readonly state: RTCPeerConnectionState;
  readonly open: boolean;
  readonly closed: boolean;
  readonly path: Path | null;
  readonly channels: Map<string, Channel>;
  readonly defaultChannel: Channel | null;
  /** Send on the default reliable ordered channel; queued (max 1024) until it opens. */
  send(data: Data): void;
  /** Open or get a named channel; `{ordered: false, maxRetransmits: 0}` is unreliable. */
  channel(label: string, options?: { ordered?: boolean; maxRetransmits?: number; maxPacketLifeTime?: number; protocol?: string }): Channel;
  close(): void;
  addEventListener(type: 'open' | 'close', l: (e: Event) => void): void;
  addEventListener(type: 'message', l: (e: MessageEvent) => void): void;
  addEventListener(type: 'channel', l: (e: Event & { channel: Channel }) => void): void;
  addEventListener(type: 'state', l: (e: Event & { state: RTCPeerConnectionState }) => void): void;
  addEventListener(type: 'path', l: (e: Event & { path: Path }) => void): void;
  /** A remote track arrived (a camera's video, or a call member's media). */
  addEventListener(type: 'track', l: (e: Event & { track: MediaStreamTrack; streams: readonly MediaStream[]; mid: string | null }) => void): void;
}

export class Channel extends EventTarget {
  readonly dc: RTCDataChannel;
  readonly label: string;
  readonly ordered: boolean;
  readonly maxRetransmits: number | null;
  readonly maxPacketLifeTime: number | null;
  readonly readyState: RTCDataChannelState;
  readonly bufferedAmount: number;
  /** Sends now; throws `channel-not-open` unless open. */
  send(data: Data): void;
  /** Resolves when open and buffered bytes are below the high-water mark (1 MiB). */
  ready(): Promise<void>;
  /** `await ready()` then send: backpressure for bulk senders. */
  sendWhenReady(data: Data): Promise<void>;
  close(): void;
  addEventListener(type: 'open' | 'close', l: (e: Event) => void): void;
  addEventListener(type: 'message', l: (e: Event & { data: string | ArrayBuffer }) => void): void;
}

export function join(serverUrl: string, room: string, options?: JoinOptions): Promise<Room>;

// --- calls (/sdk/call.js) -----------------------------------------------------------------

export interface CallOptions {
  /** Microphone: true (default), false, or constraints. */
  audio?: boolean | MediaTrackConstraints;
  /** Camera: true (default), false, or constraints. */
  video?: boolean | MediaTrackConstraints;
  /** Use these tracks instead of asking for the camera and microphone. */
  stream?: MediaStream;
  /** Members sending camera video at once (default 6); later ones are audio-only until a slot frees. */
  maxVideoSenders?: number;
  /** A fixed bitrate cap (bits/s) for every video sender instead of one that shrinks as the mesh grows. */
  maxBitrate?: number;
  /** Run the verification exchange with each peer (default true). */
  verify?: boolean;
  /** Where continuity keys and this browser's identity live (default: IndexedDB `peerweb-call`). */
  keyStore?: KeyStore;
}

export type TrackLabel = 'camera' | 'screen' | 'audio';
/**
 * `waiting` (exchanging), `compare` (read `sas` aloud, then `confirm`), `verified` (`by`
 * 'sas' or 'continuity'), `changed` (a key kept from an earlier call was not proven: maybe a
 * man in the middle; compare again), `mismatch` (the users said the words differ), `failed`
 * (a broken exchange; `error` says why).
 */
export type VerificationState = 'waiting' | 'compare' | 'verified' | 'changed' | 'mismatch' | 'failed';

export interface Verification {
  state: VerificationState;
  /** Three words, the same on both sides only if nobody is in the middle. */
  sas: string | null;
  by: 'sas' | 'continuity' | null;
  error: string | null;
}

export interface CallQuality {
  /** Received video and audio bits per second over the last two seconds (null at the first sample). */
  bitrate: number | null;
  audioBitrate: number | null;
  fps: number | null;
  width: number | null;
  height: number | null;
  framesDecoded: number;
  /** Fraction of packets lost over the last two seconds. */
  loss: number;
  /** Seconds. */
  rtt: number | null;
  freezes: number;
}

export class KeyStore {
  constructor(name?: string);
  identity(): Promise<string>;
  keyFor(identity: string): Promise<{ key: string; name: string | null; at: number } | null>;
  forget(identity: string): Promise<void>;
}

export class Call extends EventTarget {
  readonly room: Room;
  readonly localStream: MediaStream;
  readonly audioTrack: MediaStreamTrack | null;
  readonly videoTrack: MediaStreamTrack | null;
  readonly screenTrack: MediaStreamTrack | null;
  readonly muted: { audio: boolean; video: boolean };
  /** Whether our camera holds one of the mesh's video slots. */
  readonly videoState: 'on' | 'held' | 'off';
  /** The bitrate cap now on each video sender (bits/s). */
  readonly bitrate: number;
  readonly speaker: Peer | null;
  readonly participants: Array<{ peer: Peer; inCall: boolean; muted: { audio: boolean; video: boolean }; video: 'on' | 'held' | 'off'; labels: TrackLabel[]; verification: Verification; quality: CallQuality | null }>;
  mute(kind: 'audio' | 'video'): void;
  unmute(kind: 'audio' | 'video'): void;
  /** Switch camera or microphone (a deviceId or constraints), or to a given track, with no renegotiation. */
  useDevice(choice: { audio?: string | MediaTrackConstraints; video?: string | MediaTrackConstraints; track?: MediaStreamTrack }): Promise<MediaStreamTrack>;
  /** Share the screen (or the given track) as a second video track labelled `screen`. */
  shareScreen(track?: MediaStreamTrack): Promise<MediaStreamTrack>;
  stopScreen(): void;
  /** The users compared the words with `peer`: true if they matched (keeps a continuity key). */
  confirm(peer: Peer | string, matches: boolean): Promise<void>;
  hangUp(): void;
  addEventListener(type: 'track', l: (e: Event & { peer: Peer; track: MediaStreamTrack; label: TrackLabel; stream: MediaStream }) => void): void;
  addEventListener(type: 'trackended', l: (e: Event & { peer: Peer; label: TrackLabel }) => void): void;
  addEventListener(type: 'peerstate', l: (e: Event & { peer: Peer; muted: { audio: boolean; video: boolean }; video: 'on' | 'held' | 'off' }) => void): void;
  addEventListener(type: 'verification', l: (e: Event & Verification & { peer: Peer }) => void): void;
  addEventListener(type: 'speaker', l: (e: Event & { peer: Peer | null }) => void): void;
  addEventListener(type: 'quality', l: (e: Event & { peer: Peer; quality: CallQuality }) => void): void;
  addEventListener(type: 'video', l: (e: Event & { state: 'on' | 'held' }) => void): void;
  /** No `kind` either way with `peer`: its side takes none of our codecs (reported once). */
  addEventListener(type: 'nocodec', l: (e: Event & { peer: Peer; kind: 'audio' | 'video' }) => void): void;
  addEventListener(type: 'devices', l: (e: Event & { devices: MediaDeviceInfo[] }) => void): void;
  addEventListener(type: 'error' | 'ended', l: (e: Event) => void): void;
}
