/**
 * A Secrets Manager endpoint on loopback: the `GetSecretValue` action of the AWS JSON 1.1 protocol
 * (POST /, `X-Amz-Target: secretsmanager.GetSecretValue`), enough for the AWS SDK — pointed at it with
 * `AWS_ENDPOINT_URL_SECRETS_MANAGER` — to fetch a secret over a real HTTP connection. Tests change a
 * secret's value with `put` (a rotation) and count the fetches.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LocalSecretsManager {
  readonly endpoint: string;
  /** Sets (or rotates) a secret's SecretString; the ARN is the SecretId the SDK sends. */
  put(arn: string, value: string): void;
  /** How many GetSecretValue calls asked for `arn`. */
  fetches(arn: string): number;
  stop(): Promise<void>;
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => (body += chunk));
    request.on('end', () => resolve(body));
    request.on('error', reject);
  });
}

function reply(response: ServerResponse, status: number, body: unknown, errorType?: string): void {
  response.writeHead(status, {
    'content-type': 'application/x-amz-json-1.1',
    ...(errorType ? { 'x-amzn-errortype': errorType } : {}),
  });
  response.end(JSON.stringify(body));
}

export async function startLocalSecretsManager(): Promise<LocalSecretsManager> {
  const secrets = new Map<string, { value: string; version: number }>();
  const counts = new Map<string, number>();
  const server = createServer((request, response) => {
    void (async () => {
      const body = await readBody(request);
      const target = request.headers['x-amz-target'];
      if (request.method !== 'POST' || target !== 'secretsmanager.GetSecretValue') {
        reply(response, 400, { __type: 'UnknownOperationException' }, 'UnknownOperationException');
        return;
      }
      const { SecretId } = JSON.parse(body) as { SecretId: string };
      counts.set(SecretId, (counts.get(SecretId) ?? 0) + 1);
      const secret = secrets.get(SecretId);
      if (!secret) {
        const message = "Secrets Manager can't find the specified secret.";
        reply(response, 400, { __type: 'ResourceNotFoundException', message }, 'ResourceNotFoundException');
        return;
      }
      reply(response, 200, {
        ARN: SecretId,
        Name: SecretId.split(':secret:')[1] ?? SecretId,
        VersionId: `v${secret.version}`,
        VersionStages: ['AWSCURRENT'],
        SecretString: secret.value,
        CreatedDate: Date.now() / 1000,
      });
    })().catch(() => response.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    put(arn, value) {
      secrets.set(arn, { value, version: (secrets.get(arn)?.version ?? 0) + 1 });
    },
    fetches: (arn) => counts.get(arn) ?? 0,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
