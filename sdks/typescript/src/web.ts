// The mesh from a browser: gRPC-Web with fetch (the servers need the page's
// origin in GATEWAY_CORS_ORIGINS when it is served from elsewhere).
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { credentials, Mesh, type MeshOptions } from "./index.js";

export * from "./index.js";

export interface WebEndpoints {
  stamping: string;
  orchestrator: string;
  reducer: string;
}

export function connect(endpoints: WebEndpoints, options: MeshOptions = {}): Mesh {
  const interceptors = [credentials(options)];
  const transport = (baseUrl: string) => createGrpcWebTransport({ baseUrl, interceptors });
  return new Mesh(
    {
      stamping: transport(endpoints.stamping),
      orchestrator: transport(endpoints.orchestrator),
      reducer: transport(endpoints.reducer),
    },
    options,
  );
}
