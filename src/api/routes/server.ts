// `/` and `/1.0`: server information and the cluster-wide server config.

import os from 'node:os';
import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { parseBody } from '../request.js';
import { apiExtensions } from '../extensions.js';
import { hostArchitecture } from '../../cluster/members.js';
import { createHash } from 'node:crypto';
import { identityOf, isTrusted } from '../auth.js';
import { remotePoolDriver, supportedPoolDrivers } from '../../storage/pools.js';

const configBody = z.object({ config: z.record(z.string(), z.unknown()).optional() }).passthrough();

/** Register `/` and `/1.0`. */
export function registerServerRoutes(r: Router): void {
  const m = r.member;
  r.on('GET', '/', async (_req, reply) => sync(reply, ['/1.0']));

  // Prometheus text format, to trusted clients and metrics certificates (auth.ts), as LXD serves it.
  r.on('GET', '/1.0/metrics', async (_req, reply) => {
    const { contentType, body } = await m.metrics.text();
    return reply.type(contentType).send(body);
  });

  r.on('GET', '/1.0', async (req, reply) => {
    const common = { api_extensions: apiExtensions, api_status: 'stable', api_version: '1.0' };
    // An untrusted client learns only what it needs to present a token (LXD's `api.ServerUntrusted`).
    if (!isTrusted(identityOf(req))) return sync(reply, { ...common, auth: 'untrusted', public: false, auth_methods: ['tls'] });
    const config = await m.cluster.serverConfig();
    const info = {
      config: { ...config, 'cluster.https_address': m.address, 'core.https_address': m.address },
      ...common,
      auth: 'trusted',
      public: false,
      auth_methods: ['tls'],
      environment: {
        addresses: [m.address],
        architectures: [hostArchitecture()],
        certificate: m.cert.cert,
        certificate_fingerprint: m.cert.fingerprint,
        driver: 'process',
        driver_version: '1',
        firewall: '',
        kernel: os.type(),
        kernel_architecture: hostArchitecture(),
        kernel_features: {},
        kernel_version: os.release(),
        lxc_features: {},
        os_name: 'Roost',
        os_version: '0.1',
        project: 'default',
        server: 'roost',
        server_clustered: true,
        server_event_mode: 'full-mesh',
        server_name: m.name,
        server_pid: process.pid,
        server_version: '5.0.2',
        storage: 'dir',
        storage_version: '1',
        storage_supported_drivers: supportedPoolDrivers().map((name) => ({ name, version: '1', remote: remotePoolDriver(name) })),
      },
    };
    return sync(reply, info, createHash('sha256').update(JSON.stringify(config)).digest('hex'));
  });

  const update = (replace: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const body = parseBody(req, configBody);
    const cfg = Object.fromEntries(
      Object.entries(body.config ?? {}).filter(([k]) => k !== 'cluster.https_address' && k !== 'core.https_address'),
    );
    await m.cluster.updateServerConfig(cfg, replace);
    return sync(reply, {});
  };
  r.on('PUT', '/1.0', update(true));
  r.on('PATCH', '/1.0', update(false));
}
