// The mesh from Node: gRPC over HTTP/2 (the default) or gRPC-Web.
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { credentials, Mesh, type MeshOptions } from "./index.js";

export * from "./index.js";

export interface NodeEndpoints {
  stamping?: string;
  orchestrator?: string;
  reducer?: string;
}

/** TLS towards the services (https:// endpoints): the CA to trust (PEM), and a client certificate for mTLS. */
export interface NodeTls {
  ca?: string | Uint8Array;
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  /** The name to check in the servers' certificates, when not the URL's host. */
  serverName?: string;
}

/** `omninode up`'s defaults unless told otherwise; `grpcWeb` speaks gRPC-Web over HTTP/1.1. */
export function connect(
  endpoints: NodeEndpoints = {},
  options: MeshOptions & { grpcWeb?: boolean; tls?: NodeTls } = {},
): Mesh {
  const interceptors = [credentials(options)];
  const tls = options.tls;
  const nodeOptions = tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.serverName } : undefined;
  const transport = (baseUrl: string) =>
    options.grpcWeb
      ? createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors, nodeOptions })
      : createGrpcTransport({ baseUrl, interceptors, nodeOptions });
  return new Mesh(
    {
      stamping: transport(endpoints.stamping ?? "http://127.0.0.1:8053"),
      orchestrator: transport(endpoints.orchestrator ?? "http://127.0.0.1:8060"),
      reducer: transport(endpoints.reducer ?? "http://127.0.0.1:8061"),
    },
    options,
  );
}
