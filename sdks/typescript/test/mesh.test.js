// The TypeScript SDK against a real `omninode up`, over both Node transports.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, Code, OmniNodeError, orchestrator } from "../dist/node.js";

const binary = process.env.OMNINODE_BIN ?? join(process.env.CARGO_TARGET_DIR ?? "../../target", "debug", "omninode");
const freePort = () => new Promise((done) => { const s = createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => done(port)); }); });

/** Starts `omninode up` on free ports with `extra` variables; its endpoints and process. */
async function startMesh(extra = {}, scheme = "http", options = {}) {
  const [stamping, orch, reducer, gateway, metrics] = await Promise.all([1, 2, 3, 4, 5].map(freePort));
  const host = scheme === "https" ? "localhost" : "127.0.0.1";
  const urls = { stamping: `${scheme}://${host}:${stamping}`, orchestrator: `${scheme}://${host}:${orch}`, reducer: `${scheme}://${host}:${reducer}` };
  const child = spawn(binary, ["up"], {
    env: { ...process.env, OMNINODE_DATA_DIR: mkdtempSync(join(tmpdir(), "omninode-ts-")), STAMPING_PORT: `${stamping}`, ORCHESTRATOR_PORT: `${orch}`,
      REDUCER_PORT: `${reducer}`, GATEWAY_PORT: `${gateway}`, METRICS_PORT: `${metrics}`, LOG_FORMAT: "json", RUST_LOG: "warn", DATABASE_URL: "", ...extra },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const probe = connect(urls, { retries: 0, timeoutMs: 1000, ...options });
  for (let i = 0; ; i++) {
    try { await probe.hash("ready?"); break; } catch (error) {
      if (error.reason === "UNAUTHENTICATED") break;
      if (i > 150) throw error;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { urls, child };
}

let up, endpoints;
before(async () => { ({ urls: endpoints, child: up } = await startMesh()); });
after(() => up?.kill("SIGTERM"));

for (const grpcWeb of [false, true]) {
  const name = grpcWeb ? "gRPC-Web" : "gRPC";
  test(`stamp, validate, batch and paging over ${name}`, async () => {
    const mesh = connect(endpoints, { grpcWeb });
    const ns = `sdk.ts${grpcWeb ? "web" : "grpc"}`;
    const stamped = await mesh.stamp(ns, "# Title\n", "title.md");
    assert.equal(stamped.stamp.fileHash.length, 64);
    assert.equal(await mesh.hash("# Title\n"), stamped.stamp.fileHash);
    assert.equal((await mesh.validate(stamped.stampedContent)).valid, true);
    const batch = await mesh.batchStamp(ns, [{ content: "a", filePath: "a.md" }, { content: "b", filePath: "b.md" }]);
    assert.equal(batch.succeeded, 2);
    const hashes = [];
    for await (const stamp of mesh.stamps(ns, 1)) hashes.push(stamp.fileHash);
    assert.equal(new Set(hashes).size, 3);
  });

  test(`workflows run, watch, cancel and errors over ${name}`, async () => {
    const mesh = connect(endpoints, { grpcWeb });
    const ns = `sdk.tsflow${grpcWeb ? "web" : "grpc"}`;
    const done = await mesh.runWorkflow(ns, "# Workflow\n");
    assert.equal(done.state, orchestrator.WorkflowState.COMPLETED, done.errorMessage);
    const states = [];
    for await (const update of mesh.watchWorkflow(done.workflowId)) states.push(update.state);
    assert.equal(states.at(-1), orchestrator.WorkflowState.COMPLETED);
    await assert.rejects(mesh.cancelWorkflow(done.workflowId), (error) => {
      assert.ok(error instanceof OmniNodeError);
      assert.equal(error.code, Code.FailedPrecondition);
      assert.equal(error.reason, "WORKFLOW_TERMINAL");
      assert.equal(error.metadata.workflow_id, done.workflowId, "google.rpc.ErrorInfo metadata");
      return true;
    });
    await assert.rejects(mesh.stamp("Bad Namespace", "x"), (error) => {
      assert.equal(error.code, Code.InvalidArgument);
      assert.equal(error.reason, "NAMESPACE_INVALID");
      assert.equal(error.fieldViolations[0]?.field, "namespace", "google.rpc.BadRequest");
      return true;
    });
  });
}

test("API key and TLS options", async () => {
  const dir = mkdtempSync(join(tmpdir(), "omninode-ts-tls-"));
  const run = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=ts test CA", "-keyout", "ca.key", "-out", "ca.crt");
  run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr");
  writeFileSync(join(dir, "san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt");
  const ca = readFileSync(join(dir, "ca.crt"));
  const extra = { TLS_CERT_FILE: join(dir, "server.crt"), TLS_KEY_FILE: join(dir, "server.key"), TLS_CA_FILE: join(dir, "ca.crt"),
    GATEWAY_API_KEYS: "ts-key", OMNINODE_CLIENT_TOKEN: "ts-key" };
  const secured = await startMesh(extra, "https", { tls: { ca }, apiKey: "ts-key" });
  try {
    for (const grpcWeb of [false, true]) {
      const mesh = connect(secured.urls, { tls: { ca }, apiKey: "ts-key", grpcWeb });
      const done = await mesh.runWorkflow("sdk.tstls", "# TLS\n");
      assert.equal(done.state, orchestrator.WorkflowState.COMPLETED, done.errorMessage);
      const anonymous = connect(secured.urls, { tls: { ca }, retries: 0, grpcWeb });
      await assert.rejects(anonymous.stamp("sdk.tstls", "x"), (error) => { assert.equal(`${grpcWeb} ${Code[error.code]} ${error.reason}`, `${grpcWeb} Unauthenticated UNAUTHENTICATED`, error.message); return true; });
    }
  } finally {
    secured.child.kill("SIGTERM");
  }
});
