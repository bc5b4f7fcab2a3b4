// The TypeScript SDK against a real `omninode up`, over both Node transports.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, Code, OmniNodeError, orchestrator } from "../dist/node.js";

const binary = process.env.OMNINODE_BIN ?? join(process.env.CARGO_TARGET_DIR ?? "../../target", "debug", "omninode");
const freePort = () => new Promise((done) => { const s = createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => done(port)); }); });

let up, endpoints;
before(async () => {
  const [stamping, orch, reducer, gateway, metrics] = await Promise.all([1, 2, 3, 4, 5].map(freePort));
  endpoints = { stamping: `http://127.0.0.1:${stamping}`, orchestrator: `http://127.0.0.1:${orch}`, reducer: `http://127.0.0.1:${reducer}` };
  up = spawn(binary, ["up"], {
    env: { ...process.env, OMNINODE_DATA_DIR: mkdtempSync(join(tmpdir(), "omninode-ts-")), STAMPING_PORT: `${stamping}`, ORCHESTRATOR_PORT: `${orch}`,
      REDUCER_PORT: `${reducer}`, GATEWAY_PORT: `${gateway}`, METRICS_PORT: `${metrics}`, LOG_FORMAT: "json", RUST_LOG: "warn", DATABASE_URL: "" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const probe = connect(endpoints, { retries: 0, timeoutMs: 1000 });
  for (let i = 0; ; i++) {
    try { await probe.hash("ready?"); break; } catch (error) { if (i > 150) throw error; await new Promise((r) => setTimeout(r, 200)); }
  }
});
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
      return true;
    });
    await assert.rejects(mesh.stamp("Bad Namespace", "x"), (error) => error.code === Code.InvalidArgument && error.reason === "NAMESPACE_INVALID");
  });
}
