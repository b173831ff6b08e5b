// A real OAuth2 authorization server for the interoperability test
// (tests/tests/oauth_interop.rs): npm `oidc-provider`, configured for the
// client credentials grant, with token introspection and revocation.
//
// Usage: node provider.mjs '<config JSON>'
//
//   {
//     "clients": [
//       { "client_id": "...", "client_secret": "...",
//         "token_endpoint_auth_method": "client_secret_basic" | "client_secret_post",
//         "ttl": 600 }
//     ],
//     "scope": "hris.read"
//   }
//
// Every client may use the client credentials grant and the scope; `ttl` is
// the lifetime in seconds of the access tokens issued to it. Any client may
// introspect any token (the resource server authenticates as one), and a
// client may revoke its own tokens.
//
// Listens on 127.0.0.1 on a port the system picks and prints one line
// `OIDC_INTEROP_READY {"issuer": "http://127.0.0.1:PORT"}` on stdout once it
// accepts connections. Exits when its standard input closes, so a test that
// dies without stopping it does not leave it behind.
//
// Besides the provider's own routes (`/token`, `/token/introspection`,
// `/token/revocation`, discovery), `GET /_test/stats` answers what the
// token endpoint did: `{"issued": {client_id: n}, "refused": [{"client_id",
// "error"}]}`.

import http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

function fail(message) {
  process.stderr.write(`oidc interop provider: ${message}\n`);
  process.exit(2);
}

let config;
try {
  config = JSON.parse(process.argv[2] ?? '');
} catch (error) {
  fail(`the first argument must be the configuration JSON (${error.message})`);
}
if (!Array.isArray(config.clients) || config.clients.length === 0) {
  fail('the configuration names no client');
}
const scope = config.scope ?? 'hris.read';
const ttls = new Map(config.clients.map((c) => [c.client_id, c.ttl ?? 600]));

const stats = { issued: {}, refused: [] };

const server = http.createServer();
// Node closes an idle keep-alive connection after 5 s by default; a client
// that reuses one just as it is closed gets "connection reset". Keep them
// well past the clients' own idle timeout (2 s in the test).
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      token_endpoint_auth_method: c.token_endpoint_auth_method,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope,
    })),
    scopes: [scope],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
    },
    ttl: {
      ClientCredentials: (ctx, token, client) => ttls.get(client.clientId) ?? 600,
    },
  });
  provider.on('grant.success', (ctx) => {
    const id = ctx.oidc.client?.clientId ?? '';
    stats.issued[id] = (stats.issued[id] ?? 0) + 1;
  });
  provider.on('grant.error', (ctx, error) => {
    stats.refused.push({
      client_id: ctx.oidc?.client?.clientId ?? null,
      error: error.error ?? String(error),
    });
  });
  provider.on('server_error', (ctx, error) => {
    process.stderr.write(`oidc interop provider: server error: ${error.stack ?? error}\n`);
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.method === 'GET' && req.url === '/_test/stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(stats));
      return;
    }
    callback(req, res);
  });
  process.stdout.write(`OIDC_INTEROP_READY ${JSON.stringify({ issuer })}\n`);
});
server.on('error', (error) => fail(`cannot listen: ${error.message}`));

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
