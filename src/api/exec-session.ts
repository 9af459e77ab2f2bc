// LXD's exec over websockets, on the member that holds the instance. The exec operation names one secret
// per channel: "0", "1", "2" and "control" without a terminal, "0" (both ways) and "control" with one.
// The client connects each at `/1.0/operations/<id>/websocket?secret=<secret>`; once the required ones are
// there the command starts. Data travels as binary messages; an empty text message ends a stream (the
// client's stdin, the command's outputs). The control channel carries `window-resize` and `signal`; the
// client closing it while the command runs kills the command, as LXD does.

import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type WebSocket from 'ws';
import { z } from 'zod';
import type { ExecProcess, TerminalSize } from '../instances/exec.js';

/** How long the client has to connect every required websocket (LXD: 5 s). */
const connectTimeoutMs = 5_000;
/** Output waiting in one websocket beyond which reading the command's output pauses. */
const maxBufferedBytes = 1 << 20;
/** Signal number of SIGKILL, used when the client goes away mid-command. */
const sigkill = 9;

const controlMessage = z.object({
  command: z.string(),
  args: z.record(z.string(), z.string()).nullish(),
  signal: z.number().int().optional(),
});

/** Thrown when the client did not connect its websockets in time (the operation fails with this text). */
export class ExecConnectTimeout extends Error {
  constructor() {
    super('Timed out waiting for websockets to connect');
    this.name = 'ExecConnectTimeout';
  }
}

/** One exec's websockets and the command they are attached to. */
export class ExecSession {
  /** Secret per channel name ("0", "1", "2", "control"), as the operation's `fds` metadata shows them. */
  readonly secrets: Record<string, string>;
  private readonly sockets = new Map<string, WebSocket>();
  private readonly required: string[];
  private onConnected: (() => void) | null = null;
  private ended = false;
  /** The command once started (a control channel that connects later is served at once). */
  private running: ExecProcess | null = null;

  constructor(readonly terminal: TerminalSize | null) {
    const channels = terminal ? ['0', 'control'] : ['0', '1', '2', 'control'];
    this.secrets = Object.fromEntries(channels.map((c) => [c, randomBytes(32).toString('hex')]));
    // LXD lets a client without a terminal leave out the control channel (older clients never opened it).
    this.required = terminal ? channels : ['0', '1', '2'];
  }

  /** The channel a secret opens, or null for a wrong secret. */
  channelOf(secret: string): string | null {
    return Object.entries(this.secrets).find(([, s]) => s === secret)?.[0] ?? null;
  }

  /** True once a websocket is attached to `channel` (each channel takes one). */
  isConnected(channel: string): boolean {
    return this.sockets.has(channel);
  }

  /** Attach the client's websocket for `channel`. */
  attach(channel: string, ws: WebSocket): void {
    if (this.ended || this.sockets.has(channel)) {
      ws.close();
      return;
    }
    this.sockets.set(channel, ws);
    ws.on('error', () => undefined);
    // Nothing is read until the command runs: input the client sends at once must wait for it.
    ws.pause();
    if (channel === 'control' && this.running) {
      this.serveControl(ws, this.running);
      ws.resume();
    }
    if (this.required.every((c) => this.sockets.has(c))) this.onConnected?.();
  }

  /**
   * Wait for the client's websockets, start the command with `start`, relay its streams until it has
   * ended and its output is delivered, then close every websocket. Resolves with the exit code.
   */
  async run(start: () => Promise<ExecProcess>): Promise<number> {
    try {
      await this.connected();
      const proc = await start();
      this.running = proc;
      const control = this.sockets.get('control');
      if (control) this.serveControl(control, proc);
      // The output channel closing mid-command means the client is gone; without a control channel to
      // say so, the command is killed (LXD).
      this.sockets.get('1')?.once('close', () => {
        if (!this.ended && !this.sockets.has('control')) void proc.signal(sigkill);
      });
      const delivered = this.terminal
        ? [this.relayInput('0', proc), this.relayOutput(proc.stdout, '0')]
        : [this.relayInput('0', proc), this.relayOutput(proc.stdout, '1'), this.relayOutput(proc.stderr, '2')];
      for (const ws of this.sockets.values()) ws.resume();
      const code = await proc.exited;
      this.ended = true;
      // Outputs are delivered (or their websocket is gone) before the operation ends with the exit code.
      await Promise.all(delivered.slice(1));
      return code;
    } finally {
      this.ended = true;
      for (const ws of this.sockets.values()) ws.close();
    }
  }

  private connected(): Promise<void> {
    if (this.required.every((c) => this.sockets.has(c))) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.onConnected = null;
        reject(new ExecConnectTimeout());
      }, connectTimeoutMs);
      this.onConnected = () => {
        clearTimeout(timer);
        this.onConnected = null;
        resolve();
      };
    });
  }

  /** Client → command: binary messages are input, an empty text message (or a closed socket) ends it. */
  private relayInput(channel: string, proc: ExecProcess): Promise<void> {
    const ws = this.sockets.get(channel);
    if (!ws) return Promise.resolve();
    return new Promise((resolve) => {
      const end = (): void => {
        ws.off('message', onMessage);
        if (!proc.stdin.writableEnded) proc.stdin.end();
        resolve();
      };
      const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
        if (!isBinary) {
          end();
          return;
        }
        if (!proc.stdin.write(toBuffer(data))) {
          ws.pause();
          proc.stdin.once('drain', () => ws.resume());
        }
      };
      ws.on('message', onMessage);
      // Without a terminal a closed stdin is the end of input; with one, the control channel says more.
      ws.once('close', () => (this.terminal ? resolve() : end()));
    });
  }

  /** Command → client: output as binary messages, then an empty text message once it has ended. */
  private relayOutput(stream: Readable | null, channel: string): Promise<void> {
    const ws = this.sockets.get(channel);
    if (!stream) return Promise.resolve();
    return new Promise((resolve) => {
      const gone = (): boolean => !ws || ws.readyState !== ws.OPEN;
      stream.on('data', (chunk: Buffer) => {
        if (gone()) return; // drained and dropped: the command must not block on a client that left
        ws?.send(chunk, { binary: true }, () => {
          if (stream.isPaused() && (gone() || (ws?.bufferedAmount ?? 0) < maxBufferedBytes)) stream.resume();
        });
        if ((ws?.bufferedAmount ?? 0) >= maxBufferedBytes) stream.pause();
      });
      ws?.once('close', () => stream.resume());
      stream.once('end', () => {
        if (gone()) {
          resolve();
          return;
        }
        ws?.send(Buffer.alloc(0), { binary: false }, () => resolve());
      });
      stream.once('error', () => resolve());
    });
  }

  /** `window-resize` and `signal` messages; a control channel closed mid-command kills it (LXD). */
  private serveControl(ws: WebSocket, proc: ExecProcess): void {
    ws.on('message', (data) => {
      let parsed: z.infer<typeof controlMessage>;
      try {
        parsed = controlMessage.parse(JSON.parse(toBuffer(data).toString('utf8')));
      } catch {
        return; // LXD ignores control messages it cannot read
      }
      if (this.ended) return;
      if (parsed.command === 'window-resize' && this.terminal) {
        const cols = Number(parsed.args?.width);
        const rows = Number(parsed.args?.height);
        if (Number.isInteger(cols) && Number.isInteger(rows)) proc.resize({ cols, rows });
      } else if (parsed.command === 'signal' && parsed.signal !== undefined) {
        void proc.signal(parsed.signal);
      }
    });
    ws.once('close', () => {
      if (!this.ended) void proc.signal(sigkill);
    });
  }
}

/** The exec sessions of this member's running exec operations, by operation id. */
export class ExecSessions {
  private readonly byOperation = new Map<string, ExecSession>();

  /** Register a session under its operation until `done` settles. */
  add(operationId: string, session: ExecSession, done: Promise<unknown>): void {
    this.byOperation.set(operationId, session);
    const forget = (): void => {
      this.byOperation.delete(operationId);
    };
    done.then(forget, forget);
  }

  /** The session of a live exec operation of this member. */
  get(operationId: string): ExecSession | undefined {
    return this.byOperation.get(operationId);
  }
}

function toBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}
