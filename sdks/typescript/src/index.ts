// Client of the OmniNode Bridge mesh on connect-es, for any transport: Node's
// gRPC or gRPC-Web (`@omninode/client/node`), a browser's gRPC-Web
// (`@omninode/client/web`). One `Mesh` for stamping, the orchestrator and the
// reducer, with an API key or bearer token on every call, a deadline per
// call, retries of UNAVAILABLE, errors that carry the code and the mesh's
// reason (`OmniNodeError`), and async iterators for paging and watching. The
// generated messages and services are exported as well.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { OrchestratorService, type Workflow } from "./gen/omninode/orchestrator/v1/orchestrator_pb.js";
import { ReducerService } from "./gen/omninode/reducer/v1/reducer_pb.js";
import { StampingService, type StampRecord } from "./gen/omninode/stamping/v1/stamping_pb.js";

export * as orchestrator from "./gen/omninode/orchestrator/v1/orchestrator_pb.js";
export * as reducer from "./gen/omninode/reducer/v1/reducer_pb.js";
export * as stamping from "./gen/omninode/stamping/v1/stamping_pb.js";
export { Code } from "@connectrpc/connect";

/** The trailer that carries the mesh's machine-readable error reason. */
export const REASON_KEY = "omninode-error-reason";

/** One `google.rpc.BadRequest` field violation. */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * A failed call: its gRPC `code`, the mesh's `reason` and the message, and
 * the status details: `metadata` (`google.rpc.ErrorInfo`: what the error is
 * about, e.g. `namespace`, `workflowId` as `workflow_id`) and
 * `fieldViolations` (`google.rpc.BadRequest`).
 */
export class OmniNodeError extends Error {
  constructor(
    readonly code: Code,
    readonly reason: string,
    message: string,
    readonly metadata: Record<string, string> = {},
    readonly fieldViolations: FieldViolation[] = [],
  ) {
    super(`${Code[code]} ${reason || "-"}: ${message}`);
    this.name = "OmniNodeError";
  }

  static from(error: unknown): OmniNodeError {
    const connect = ConnectError.from(error);
    let reason = connect.metadata.get(REASON_KEY) ?? "";
    const metadata: Record<string, string> = {};
    const fieldViolations: FieldViolation[] = [];
    for (const detail of connect.details) {
      if (!("type" in detail && detail.value instanceof Uint8Array)) continue;
      if (detail.type === "google.rpc.ErrorInfo") {
        for (const [no, bytes] of lengthDelimited(detail.value)) {
          if (no === 1) reason = text(bytes);
          if (no === 3) {
            const entry = new Map(lengthDelimited(bytes));
            metadata[text(entry.get(1) ?? new Uint8Array())] = text(entry.get(2) ?? new Uint8Array());
          }
        }
      } else if (detail.type === "google.rpc.BadRequest") {
        for (const [no, bytes] of lengthDelimited(detail.value)) {
          if (no !== 1) continue;
          const violation = new Map(lengthDelimited(bytes));
          fieldViolations.push({ field: text(violation.get(1) ?? new Uint8Array()), description: text(violation.get(2) ?? new Uint8Array()) });
        }
      }
    }
    return new OmniNodeError(connect.code, reason, connect.rawMessage, metadata, fieldViolations);
  }
}

/** The length-delimited fields (strings, messages) of an encoded message: two small
 * google.rpc messages are read without generating code for them. */
function lengthDelimited(bytes: Uint8Array): Array<[number, Uint8Array]> {
  const reader = new BinaryReader(bytes);
  const fields: Array<[number, Uint8Array]> = [];
  while (reader.pos < reader.len) {
    const [no, type] = reader.tag();
    if (type === WireType.LengthDelimited) fields.push([no, reader.bytes()]);
    else reader.skip(type);
  }
  return fields;
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

export interface MeshOptions {
  /** Sent as `x-api-key`. */
  apiKey?: string;
  /** Sent as `authorization: Bearer …` (a JWT). */
  token?: string;
  /** Each call's deadline (default 30 s). */
  timeoutMs?: number;
  /** Retries of UNAVAILABLE after the first attempt (default 3). */
  retries?: number;
}

export interface MeshTransports {
  stamping: Transport;
  orchestrator: Transport;
  reducer: Transport;
}

/** Adds the credential of `options` to every call. */
export function credentials(options: MeshOptions): Interceptor {
  return (next) => async (request) => {
    if (options.apiKey) request.header.set("x-api-key", options.apiKey);
    else if (options.token) request.header.set("authorization", `Bearer ${options.token}`);
    return next(request);
  };
}

const pause = (attempt: number) => new Promise((done) => setTimeout(done, Math.random() * Math.min(2000, 50 * 2 ** attempt)));

/** The whole mesh. */
export class Mesh {
  readonly stamping: Client<typeof StampingService>;
  readonly orchestrator: Client<typeof OrchestratorService>;
  readonly reducer: Client<typeof ReducerService>;
  private readonly timeoutMs: number;
  private readonly retries: number;

  constructor(transports: MeshTransports, options: MeshOptions = {}) {
    this.stamping = createClient(StampingService, transports.stamping);
    this.orchestrator = createClient(OrchestratorService, transports.orchestrator);
    this.reducer = createClient(ReducerService, transports.reducer);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.retries = options.retries ?? 3;
  }

  /** Calls with a deadline, retrying UNAVAILABLE with exponential backoff and jitter. */
  async call<T>(call: (options: { timeoutMs: number }) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call({ timeoutMs: this.timeoutMs });
      } catch (error) {
        const failure = OmniNodeError.from(error);
        if (failure.code !== Code.Unavailable || attempt >= this.retries) throw failure;
        await pause(attempt + 1);
      }
    }
  }

  async hash(content: string | Uint8Array): Promise<string> {
    const bytes = typeof content === "string" ? new TextEncoder().encode(content) : content;
    return (await this.call((o) => this.stamping.hash({ content: bytes, normalize: true }, o))).hash;
  }

  stamp(namespace: string, content: string, filePath = "") {
    return this.call((o) => this.stamping.stamp({ namespace, content, filePath }, o));
  }

  batchStamp(namespace: string, items: Array<{ content: string; filePath?: string }>) {
    return this.call((o) => this.stamping.batchStamp({ namespace, items }, o));
  }

  validate(content: string, expectedHash = "") {
    return this.call((o) => this.stamping.validate({ content, expectedHash }, o));
  }

  /** Every stamp of `namespace`, newest first, a page at a time. */
  async *stamps(namespace: string, pageSize = 100): AsyncGenerator<StampRecord> {
    let pageToken = "";
    do {
      const page = await this.call((o) => this.stamping.listStamps({ namespace, pageSize, pageToken }, o));
      yield* page.stamps;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  async startWorkflow(namespace: string, content: string, definition = ""): Promise<Workflow> {
    const answer = await this.call((o) => this.orchestrator.startWorkflow({ namespace, input: { content }, definition }, o));
    return answer.workflow!;
  }

  /** Starts a workflow and resolves once it stops running (terminal, WAITING or PAUSED). */
  async runWorkflow(namespace: string, content: string, definition = ""): Promise<Workflow> {
    const answer = await this.call((o) => this.orchestrator.runWorkflow({ namespace, input: { content }, definition }, o));
    return answer.workflow!;
  }

  async getWorkflow(workflowId: string): Promise<Workflow> {
    return (await this.call((o) => this.orchestrator.getWorkflow({ workflowId }, o))).workflow!;
  }

  async cancelWorkflow(workflowId: string, reason = ""): Promise<Workflow> {
    return (await this.call((o) => this.orchestrator.cancelWorkflow({ workflowId, reason }, o))).workflow!;
  }

  async approveStep(workflowId: string, stepName: string, approver: string, comment = ""): Promise<Workflow> {
    return (await this.call((o) => this.orchestrator.approveStep({ workflowId, stepName, approver, comment }, o))).workflow!;
  }

  /** The workflow now, then every change, ending after a terminal state. */
  async *watchWorkflow(workflowId: string): AsyncGenerator<Workflow> {
    try {
      for await (const update of this.orchestrator.watchWorkflow({ workflowId })) {
        yield update.workflow!;
      }
    } catch (error) {
      throw OmniNodeError.from(error);
    }
  }

  async namespaceStats(namespace: string) {
    return (await this.call((o) => this.reducer.getNamespaceStats({ namespace }, o))).stats!;
  }
}
