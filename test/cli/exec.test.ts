// `roost exec` against a real two-member cluster (process instance on m02, asked through m01): output
// streamed to the right stream, the command's exit code, stdin passed through, `-n`, `-t` under a terminal;
// and the exec API's refusals: a wrong websocket secret, a client that never connects, another user.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { spawn as spawnPty } from 'node-pty';
import WebSocket from 'ws';
import { readPtyToEnd } from '../../src/instances/pty-output.js';
import { runCli } from '../../src/cli/run.js';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { assertError } from '../helpers/envelope.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let c: TestCluster | undefined;

function cluster(): TestCluster {
  assert.ok(c, 'the cluster runs');
  return c;
}

/** Collects what is written to it. */
class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/** `roost <argv>` in this process through m01, with `input` as stdin if given. */
async function roost(argv: string[], input?: string): Promise<{ code: number; out: string; err: string }> {
  const stdout = new Sink();
  const stderr = new Sink();
  const code = await runCli(argv, { stdout, stderr, stdin: input === undefined ? undefined : Readable.from([input]), env: { ROOST_DIR: cluster().memberDir('m01') } });
  return { code, out: stdout.text, err: stderr.text };
}

describe('roost exec', () => {
  before(async () => {
    c = await startCluster({ members: 2 });
    await c.launch('p1', { target: 'm02' });
  });
  after(async () => {
    await c?.stop();
  });

  it('streams stdout and stderr apart and exits with the command\'s code', async () => {
    const r = await roost(['exec', 'p1', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual(r, { code: 3, out: 'out\n', err: 'err\n' });
  });

  it('passes stdin to the command, and -n gives it none', async () => {
    assert.deepEqual(await roost(['exec', 'p1', '--', 'tr', 'a-z', 'A-Z'], 'hello\n'), { code: 0, out: 'HELLO\n', err: '' });
    assert.deepEqual(await roost(['exec', '-n', 'p1', '--', 'wc', '-c'], 'ignored'), { code: 0, out: '0\n', err: '' });
  });

  it('reports a missing command as lxc does (exit 127)', async () => {
    const r = await roost(['exec', 'p1', '--', 'no-such-command']);
    assert.equal(r.code, 127);
    assert.equal(r.err, 'Error: Command not found\n');
  });

  it('-t runs the command under a terminal', async () => {
    const term = spawnPty(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src', 'cli', 'main.ts'), 'exec', '-t', 'p1', '--', 'sh', '-c', 'tty; stty size; read line; echo "got $line"; exit 4'], {
      cols: 70,
      rows: 20,
      cwd: repoRoot,
      env: { ...stringEnv(), ROOST_DIR: cluster().memberDir('m01') },
    });
    readPtyToEnd(term);
    let output = '';
    term.onData((d) => (output += d));
    const exited = new Promise<number>((resolve) => term.onExit((e) => resolve(e.exitCode)));
    const killer = setTimeout(() => term.kill('SIGKILL'), 30_000);
    try {
      await waitFor('the command asks for a line', () => /20 70\r\r?\n/.test(output), 20_000);
      term.write('typed\r');
      assert.equal(await exited, 4);
      // Node's raw mode keeps the output's newline translation, hence \r\r\n on this side.
      assert.match(output, /\/dev\/pts\/\d+\r\r?\n20 70\r\r?\n(typed\r\r?\n)?got typed\r\r?\n/);
    } finally {
      clearTimeout(killer);
    }
  });

  it('a wrong websocket secret is refused with 403 and the exec times out without its websockets', async () => {
    const res = await cluster().raw('m01', 'POST', '/1.0/instances/p1/exec', { json: { command: ['true'], 'wait-for-websocket': true, interactive: false } });
    assert.equal(res.status, 202);
    const op = res.body?.metadata as { id: string; class: string; location: string; metadata: { fds: Record<string, string> } };
    assert.equal(op.class, 'websocket');
    assert.equal(op.location, 'm02');
    assert.deepEqual(Object.keys(op.metadata.fds).sort(), ['0', '1', '2', 'control']);
    for (const via of ['m02', 'm01']) {
      const refused = await upgradeStatus(via, `/1.0/operations/${op.id}/websocket?secret=wrong`);
      assert.equal(refused, 403, `through ${via}`);
    }
    const done = await cluster().client('m01').get(`/1.0/operations/${op.id}/wait?timeout=30`) as { status: string; err: string };
    assert.deepEqual({ status: done.status, err: done.err }, { status: 'Failure', err: 'Timed out waiting for websockets to connect' });
  });

  it('refuses running as another user and exec in a stopped instance', async () => {
    assertError(await cluster().raw('m01', 'POST', '/1.0/instances/p1/exec', { json: { command: ['id'], 'wait-for-websocket': true, user: 1000 } }), 400, /another user/);
    await cluster().launch('idle', { target: 'm02', start: false });
    assertError(await cluster().raw('m01', 'POST', '/1.0/instances/idle/exec', { json: { command: ['true'], 'wait-for-websocket': true } }), 400, /Instance is not running/);
  });
});

/** The HTTP status a websocket upgrade on `member`'s socket is answered with (101 when accepted). */
function upgradeStatus(member: string, urlPath: string): Promise<number> {
  const ws = new WebSocket(`ws+unix://${path.join(cluster().memberDir(member), 'unix.socket')}:${urlPath}`);
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (req, res) => {
      resolve(res.statusCode ?? 0);
      req.destroy();
    });
    ws.once('open', () => {
      ws.close();
      resolve(101);
    });
    ws.on('error', (err) => reject(err));
  });
}

function stringEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return env;
}
