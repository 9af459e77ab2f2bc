// Running a command inside an instance once a driver said how (ExecInvocation): with pipes (stdin, stdout and
// stderr apart, LXD's non-interactive exec) or under a terminal (one stream both ways, LXD's interactive
// exec, through node-pty). Either way the caller sees Node streams and one exit code, as LXD reports it:
// 128 + n for a command killed by signal n, 127 when the command does not exist.

import { spawn } from 'node:child_process';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { PassThrough, Writable, finished, type Readable } from 'node:stream';
import type { ExecInvocation } from './driver.js';
import { readPtyToEnd } from './pty-output.js';

/** Exit code of a command that could not be found (a shell's, and LXD's "Command not found"). */
export const commandNotFound = 127;
/** Exit code of a command that exists but cannot be run (LXD's "Command not executable"). */
export const commandNotExecutable = 126;

/** A terminal's size in character cells. */
export interface TerminalSize {
  cols: number;
  rows: number;
}

/** A command running inside an instance. */
export interface ExecProcess {
  /** Host pid of the invocation's program. */
  readonly pid: number;
  /** The command's input; ending it closes stdin (under a terminal: the terminal's end-of-file, ^D). */
  readonly stdin: Writable;
  /** Its output; under a terminal, stdout and stderr are this one stream. */
  readonly stdout: Readable;
  /** Its error output, or null under a terminal. */
  readonly stderr: Readable | null;
  /** Settles with the exit code once the command ended and all its output has been delivered. */
  readonly exited: Promise<number>;
  /** Send a signal (by number) to the command. */
  signal(signal: number): Promise<void>;
  /** Change the terminal's size (nothing without a terminal). */
  resize(size: TerminalSize): void;
}

/** Start `invocation` with pipes, or under a terminal of `terminal`'s size. */
export async function startExec(invocation: ExecInvocation, terminal?: TerminalSize): Promise<ExecProcess> {
  if (!(await findExecutable(invocation))) return notFound();
  return terminal ? startWithTerminal(invocation, terminal) : startWithPipes(invocation);
}

function startWithPipes(invocation: ExecInvocation): ExecProcess {
  // Its own session: the daemon's terminal signals never reach it, and it never gets the daemon's terminal.
  const child = spawn(invocation.file, invocation.args, { cwd: invocation.cwd, env: invocation.env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
  const [stdin, stdout, stderr] = [child.stdin, child.stdout, child.stderr];
  // A command that ends before reading its input makes writes fail with EPIPE; the input is then moot.
  stdin.on('error', () => undefined);
  const exited = new Promise<number>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ENOENT' ? commandNotFound : commandNotExecutable));
    // 'close' comes after the exit and after both outputs have ended.
    child.once('close', (code, signal) => resolve(exitCode(code, signal)));
  });
  return {
    pid: child.pid ?? 0,
    stdin,
    stdout,
    stderr,
    exited,
    signal: (signal) => signalCommand(invocation, child.pid ?? 0, signal),
    resize: () => undefined,
  };
}

async function startWithTerminal(invocation: ExecInvocation, size: TerminalSize): Promise<ExecProcess> {
  // Loaded on first use: a native module, needed only by exec with a terminal.
  const pty = await import('node-pty');
  const term = pty.spawn(invocation.file, invocation.args, {
    cols: clampSize(size.cols, 80),
    rows: clampSize(size.rows, 24),
    cwd: invocation.cwd,
    env: invocation.env,
    name: invocation.env.TERM ?? 'xterm',
    encoding: null,
  });
  readPtyToEnd(term);
  const stdout = new PassThrough();
  term.onData((data: string | Buffer) => {
    if (!stdout.write(typeof data === 'string' ? Buffer.from(data) : data)) {
      term.pause();
      stdout.once('drain', () => term.resume());
    }
  });
  const stdin = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      term.write(chunk);
      callback();
    },
    final(callback) {
      // A terminal has no end of input of its own: the line discipline's EOF character makes a read return 0.
      term.write('\x04');
      callback();
    },
  });
  const exited = new Promise<number>((resolve) => {
    // node-pty reports the exit once the terminal's output has been read to its end (see readPtyToEnd).
    term.onExit(({ exitCode: code, signal }) => {
      stdout.end();
      finished(stdout, () => resolve(signal ? 128 + signal : code));
    });
  });
  return {
    pid: term.pid,
    stdin,
    stdout,
    stderr: null,
    exited,
    signal: (signal) => signalCommand(invocation, term.pid, signal),
    resize: (next) => term.resize(clampSize(next.cols, 80), clampSize(next.rows, 24)),
  };
}

/** What a command that does not exist looks like: no output, exit code 127. */
function notFound(): ExecProcess {
  const empty = (): PassThrough => {
    const s = new PassThrough();
    s.end();
    return s;
  };
  return {
    pid: 0,
    stdin: new Writable({ write: (_chunk, _encoding, callback) => callback() }),
    stdout: empty(),
    stderr: empty(),
    exited: Promise.resolve(commandNotFound),
    signal: async () => undefined,
    resize: () => undefined,
  };
}

/**
 * True if the invocation's program exists as an executable file, looked up on the invocation's PATH as
 * exec would; checked first because a terminal's child cannot report that it failed to start.
 */
async function findExecutable(invocation: ExecInvocation): Promise<boolean> {
  const candidates = invocation.file.includes('/')
    ? [path.resolve(invocation.cwd, invocation.file)]
    : (invocation.env.PATH ?? '').split(':').filter((d) => d !== '').map((d) => path.resolve(invocation.cwd, d, invocation.file));
  for (const candidate of candidates) {
    const st = await fsp.stat(candidate).catch(() => null);
    if (st?.isFile() && (await fsp.access(candidate, fsConstants.X_OK).then(() => true, () => false))) return true;
  }
  return false;
}

async function signalCommand(invocation: ExecInvocation, pid: number, signal: number): Promise<void> {
  if (pid <= 1 || !Number.isInteger(signal) || signal <= 0 || signal > 64) return;
  const target = invocation.signalTarget ? await invocation.signalTarget(pid) : pid;
  try {
    process.kill(target, signal);
  } catch {
    // Already gone: the exit code tells the rest.
  }
}

function exitCode(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0);
}

function clampSize(value: number, fallback: number): number {
  return Number.isInteger(value) && value > 0 && value <= 10_000 ? value : fallback;
}
