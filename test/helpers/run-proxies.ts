/**
 * One set of proxies per run (process): S3 and DynamoDB through HTTP fault proxies, Postgres through a TCP
 * proxy whose client side is read for standby status updates. Because each run gets its own ports, every
 * request and every acknowledgement in the logs is known to come from that run.
 */
import { startHttpFaultProxy, type HttpFaultProxy } from './http-fault-proxy.js';
import { StatusUpdateRecorder } from './pg-wire.js';
import { tagged, type TaggedRequest } from './s3-history.js';
import type { Pipeline, TestStack } from './stack.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

export interface RunProxies {
  readonly name: string;
  readonly s3: HttpFaultProxy;
  /** Buffers request bodies: matchers and the log see DynamoDB's JSON. */
  readonly dynamo: HttpFaultProxy;
  readonly postgres: TcpProxy;
  /** Every standby status update the run sent (its acknowledgements). */
  readonly acks: StatusUpdateRecorder;
  /** The pipeline's environment with every connection going through these proxies. */
  env(pipeline: Pipeline, extra?: Record<string, string>): Record<string, string>;
  /** The S3 requests so far, tagged with this run's name. */
  s3Requests(): TaggedRequest[];
  stop(): Promise<void>;
}

export async function startRunProxies(stack: TestStack, name: string): Promise<RunProxies> {
  const acks = new StatusUpdateRecorder();
  const [s3, dynamo, postgres] = await Promise.all([
    startHttpFaultProxy({ target: stack.s3.endpoint }),
    startHttpFaultProxy({ target: stack.dynamo.endpoint, bufferRequests: true }),
    startTcpProxy({
      targetHost: stack.postgres.host,
      targetPort: stack.postgres.port,
      onClientData: acks.onClientData,
    }),
  ]);
  return {
    name,
    s3,
    dynamo,
    postgres,
    acks,
    env(pipeline, extra = {}) {
      const url = new URL(pipeline.databaseUrl);
      url.host = `${postgres.host}:${postgres.port}`;
      return {
        ...pipeline.env,
        DATABASE_URL: url.toString(),
        AWS_ENDPOINT_URL_S3: s3.endpoint,
        AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
        ...extra,
      };
    },
    s3Requests: () => tagged(name, s3),
    async stop() {
      await Promise.all([s3.stop(), dynamo.stop(), postgres.stop()]);
    },
  };
}
