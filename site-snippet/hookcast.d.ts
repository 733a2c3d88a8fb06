// Hand-written types for hookcast.js (global `Hookcast`) and hookcast.mjs.

export interface HookcastEvent<D = unknown> {
  channel: string;
  seq: number;
  event: string;
  data: D;
  /** RFC 3339, UTC. */
  at: string;
}

/** A channel's state at `seq` (server `[state]`), sent before `subscribed`. */
export interface HookcastState {
  channel: string;
  seq: number;
  /** last: the latest event; merge: the merged data; list: the newest events, oldest first. */
  mode: 'last' | 'merge' | 'list';
  state: unknown;
}

export type Status = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'paused' | 'closed' | 'refused';

export interface ClientOptions {
  url: string;
  WebSocket?: new (url: string) => WebSocket;
  now?: () => number;
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
  storage?: Pick<Storage, 'getItem' | 'setItem'> | null;
  /** Backoff base and cap, ms (500, 30000). */
  baseDelay?: number;
  maxDelay?: number;
  /** The backoff resets only after a connection stayed up this long, ms (5000). */
  minUptime?: number;
  /** App-level ping, ms (240000: inside API Gateway's 10-minute idle timeout). */
  pingInterval?: number;
  /** Planned reconnect, ms (6600000: before API Gateway's 2-hour cap). */
  maxLifetime?: number;
  /** A subscribe unanswered this long failed and is asked again with the backoff, ms (15000). */
  subscribeTimeout?: number;
  /** How often to ask watched channels' occupancy, ms (30000; at least 10000). */
  occupancyInterval?: number;
  /** A subscribe token for private channels (`hookcast token`), or one per channel. */
  token?: string | ((channel: string) => string | null | undefined) | null;
  /** Build stamps: where each channel stood when the page was built (its `since`). */
  stamps?: Record<string, number>;
  /** The log the stamps were read in. */
  epoch?: string | null;
  /** `quiet`: this tab applied the event before (a reload): not news. */
  onEvent?: (ev: HookcastEvent, quiet?: boolean) => void;
  onState?: (state: HookcastState) => void;
  onStatus?: (status: Status, detail?: unknown) => void;
  onReset?: (channel: string, head: number) => void;
  onOccupancy?: (channel: string, count: number) => void;
}

export interface Client {
  add(channel: string): void;
  /** Subscribes and asks how many pages view the channel, now and periodically. */
  watchOccupancy(channel: string): void;
  start(): void;
  stop(label?: Status): void;
  lastSeq(channel: string): number | null;
  status(): Status;
}

export interface StartOptions {
  /** WebSocket URL; default /ws on the script's host. */
  url?: string;
  /** "session" keeps the last seq per channel in sessionStorage (default). */
  storage?: 'session' | 'none';
  /** Poke/pull refetch window, ms (5000). */
  spread?: number | string | null;
  /** Seconds a hidden tab stays connected (300; 0 = always). */
  pauseHidden?: number | string | null;
  /** Seconds between occupancy asks (30; at least 10). */
  occupancyInterval?: number | string | null;
  /** A subscribe token for private channels (`hookcast token`), or one per channel. */
  token?: string | ((channel: string) => string | null | undefined) | null;
}

export interface Page {
  client: Client;
  rescan(): void;
}

export interface Hookcast {
  start(options?: StartOptions): Page;
  on<D = unknown>(channel: string, fn: (ev: HookcastEvent<D>) => void): void;
  on<D = unknown>(channel: string, event: string | null, fn: (ev: HookcastEvent<D>) => void): void;
  createClient(options: ClientOptions): Client;
  mergePatch<T>(target: T, patch: unknown): T;
  backoff(attempt: number, base: number, max: number, random: () => number): number;
  client: Client | null;
}

export declare function start(options?: StartOptions): Page;
export declare const on: Hookcast['on'];
export declare const createClient: Hookcast['createClient'];
export declare const mergePatch: Hookcast['mergePatch'];
declare const _default: Pick<Hookcast, 'start' | 'on' | 'createClient' | 'mergePatch'>;
export default _default;

declare global {
  interface Window {
    Hookcast: Hookcast;
  }
  interface DocumentEventMap {
    'hookcast:event': CustomEvent<HookcastEvent>;
    'hookcast:open': CustomEvent<Record<string, never>>;
    'hookcast:close': CustomEvent<unknown>;
    'hookcast:reconnecting': CustomEvent<{ delay: number; attempt: number }>;
    'hookcast:reset': CustomEvent<{ channel: string; seq: number }>;
    'hookcast:refresh': CustomEvent<{ ids: string[]; error?: string }>;
    'hookcast:occupancy': CustomEvent<{ channel: string; count: number }>;
    'hookcast:state': CustomEvent<Omit<HookcastState, never>>;
  }
}
