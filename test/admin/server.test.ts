// The admin HTTP layer on real HTTP: who may mutate, and that bad requests get
// a clear error without reaching the node. The node behind it is a stand-in
// that records calls; the e2e tests drive the real sidecar.
import { afterEach, describe, expect, it } from 'vitest';
import { AdminServer, type AdminTarget } from '../../src/admin/server.js';
import { createLogger } from '../../src/log.js';

const servers: AdminServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(token: string | undefined): Promise<{ base: string; calls: string[] }> {
  const calls: string[] = [];
  const target: AdminTarget = {
    status: () => ({ replica: 1 }) as never,
    cluster: async () => ({}) as never,
    promote: async () => calls.push('promote'),
    demote: () => calls.push('demote'),
    transfer: async (to) => calls.push(`transfer ${to}`),
    tables: async () => [],
    changeTableMode: async (table, mode) => {
      calls.push(`${table} ${mode}`);
      return { table, mode };
    },
    metrics: async () => ({ contentType: 'text/plain', text: '' }),
  };
  const server = new AdminServer(target, token, createLogger({ test: 'admin' }, undefined, 'fatal'));
  servers.push(server);
  const port = await server.listen(0, '127.0.0.1');
  return { base: `http://127.0.0.1:${port}`, calls };
}

describe('the admin server', () => {
  it('refuses every mutating request on a node started without a token, and says how to allow them', async () => {
    const { base, calls } = await serve(undefined);
    for (const [method, path] of [['POST', '/promote'], ['POST', '/demote'], ['POST', '/transfer?to=2'], ['PUT', '/tables/t']] as const) {
      const response = await fetch(`${base}${path}`, { method, headers: { authorization: 'Bearer anything-at-all-0123' }, body: method === 'PUT' ? '{"mode":"sync"}' : null });
      expect(response.status, path).toBe(403);
      expect(await response.json()).toMatchObject({ error: { code: 'FORBIDDEN', message: expect.stringMatching(/started without --admin-token/) } });
    }
    expect(calls).toEqual([]);
    expect((await fetch(`${base}/status`)).status).toBe(200);
  });

  it('takes the right token; refuses a wrong one, a bad target, an oversized or broken body', async () => {
    const token = 'right-token-0123456789';
    const { base, calls } = await serve(token);
    const auth = { authorization: `Bearer ${token}` };
    expect((await fetch(`${base}/transfer?to=2`, { method: 'POST', headers: auth })).status).toBe(200);
    expect((await fetch(`${base}/transfer?to=2`, { method: 'POST', headers: { authorization: `Bearer ${token}x` } })).status).toBe(401);
    expect((await fetch(`${base}/transfer?to=2`, { method: 'POST', headers: { authorization: token } })).status).toBe(401);
    const badTarget = await fetch(`${base}/transfer?to=99`, { method: 'POST', headers: auth });
    expect(badTarget.status).toBe(400);
    expect(await badTarget.json()).toMatchObject({ error: { message: expect.stringMatching(/transfer needs \?to=<replica id 1..31>, got "99"/) } });
    const huge = await fetch(`${base}/tables/t`, { method: 'PUT', headers: auth, body: `{"mode":"${'x'.repeat(100_000)}"}` });
    expect(huge.status).toBe(400);
    expect((await fetch(`${base}/tables/t`, { method: 'PUT', headers: auth, body: '{"mode":' })).status).toBe(400);
    expect((await fetch(`${base}/tables/my%20table`, { method: 'PUT', headers: auth, body: '{"mode":"async"}' })).status).toBe(200);
    expect((await fetch(`${base}/tables/t?mode=local`, { method: 'PUT', headers: auth })).status).toBe(200);
    expect(calls).toEqual(['transfer 2', 'my table async', 't local']);
  });
});
