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
   * replaced). A refused token rejects `join` with code `unauthorized`.
   */
  token?: string | (() => string | Promise<string>);
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
