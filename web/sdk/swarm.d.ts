// Type declarations for verified swarms in the browser SDK (/sdk/swarm.js).

import type { JoinOptions, PeerwebError, Room } from './peerweb.js';

/** Bytes of one file by source, and its neighbours now. */
export interface SwarmStats {
  /** From the origin over HTTP (as they arrived: what the origin sent). */
  http: number;
  /** From neighbours, verified. */
  p2p: number;
  /** Uploaded to neighbours. */
  up: number;
  /** Groups that failed verification (each banned its sender). */
  bad: number;
  peers: number;
}

export interface SwarmOptions {
  /** The `peerweb serve` address (default: this page's origin). */
  server?: string;
  /**
   * The manifest: a URL, or its bytes. Default: `peerweb-manifest.json` in the file's folder
   * (where `peerweb manifest` writes it).
   */
  manifest?: string | Uint8Array | ArrayBuffer;
  /** `ed25519:…`: refuse a manifest not signed by this key. */
  trust?: string;
  /**
   * Uploads to neighbours: `rate` (bytes/s) and `budget` (bytes in all), or `false` for none.
   * None by default when the connection asks to save data.
   */
  upload?: { rate?: number; budget?: number } | false;
  /** The response's Content-Type (default: from the URL's extension). */
  contentType?: string;
  /** Options of the swarm's signaling (as a room's). */
  room?: Partial<JoinOptions>;
  reportConnectivity?: boolean;
}

export interface SwarmProgressEvent extends Event {
  stats: SwarmStats;
  /** Groups held, of `groups`. */
  have: number;
  groups: number;
}

export interface SwarmBannedEvent extends Event {
  peer: string;
  group: number;
  reason: string;
}

/** One file shared with its swarm: fetched (while incomplete) and served (while open). */
export class SwarmFile extends EventTarget {
  readonly url: URL;
  readonly size: number;
  /** The file's content id (its BLAKE3 root; `entry.root` has it in hex). */
  readonly root: Uint8Array;
  /** The manifest's entry for the file. */
  readonly entry: { path: string; size: number; root: string; outboard?: string };
  readonly stats: SwarmStats;
  readonly room: Room;
  /** Bytes `from` to `to` (exclusive) once verified; those groups are fetched first. */
  read(from: number, to: number): Promise<Uint8Array>;
  /** The verified bytes in order. */
  stream(): ReadableStream<Uint8Array>;
  /** Stops fetching and serving, and leaves the swarm. */
  close(): void;
  addEventListener(type: 'progress', listener: (e: SwarmProgressEvent) => void): void;
  addEventListener(type: 'banned', listener: (e: SwarmBannedEvent) => void): void;
  addEventListener(type: 'complete', listener: (e: Event) => void): void;
  addEventListener(type: 'error', listener: (e: Event & { error: PeerwebError | Error }) => void): void;
}

/** `fetch` for a manifest-listed file: a streaming Response of verified bytes. */
export function fetch(url: string | URL, options?: SwarmOptions): Promise<Response & { swarm: SwarmFile }>;

/** The file in its swarm, joined. */
export function open(url: string | URL, options?: SwarmOptions): Promise<SwarmFile>;

export interface RelayOptions extends SwarmOptions {
  /** The swarm service worker's script, registered here (e.g. `/sdk/swarm-sw.js`). */
  sw?: string;
  scope?: string;
}

/**
 * This page answers the swarm service worker's requests for `urls` with verified bytes from
 * their swarms; anything else goes to the network.
 */
export function relay(urls: (string | URL)[], options?: RelayOptions): Promise<{
  files: Map<string, Promise<SwarmFile>>;
  close(): void;
}>;

/** Most bytes a page holds for one file. */
export const MAX_SIZE: number;
export const MANIFEST_NAME: string;
