// A peer no one here wrote: a plain @connectrpc/connect-node client of the generated service
// (not this package), over Connect and gRPC-Web, HTTP/1.1 and HTTP/2 without TLS.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";

import { BadRequestSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { Encoding, ServerFunctions } from "../src/gen/serverfn/v1/serverfn_pb.js";

const WEB_URL = process.env["SERVERFN_WEB_URL"] ?? "";

const TRANSPORTS = {
  "connect json, HTTP/1.1": () => createConnectTransport({ baseUrl: WEB_URL, httpVersion: "1.1" }),
  "connect binary, HTTP/2": () =>
    createConnectTransport({ baseUrl: WEB_URL, httpVersion: "2", useBinaryFormat: true }),
  "grpc-web, HTTP/1.1": () => createGrpcWebTransport({ baseUrl: WEB_URL, httpVersion: "1.1" }),
  "grpc-web, HTTP/2": () => createGrpcWebTransport({ baseUrl: WEB_URL, httpVersion: "2" }),
};

for (const [name, transport] of Object.entries(TRANSPORTS)) {
  describe(`connect-node, ${name}`, () => {
    const client = createClient(ServerFunctions, transport());

    test("streams json chunks with their sequence numbers", async () => {
      const chunks = [];
      for await (const chunk of client.invoke({
        function: "count_async",
        input: { case: "json", value: '{"n": 3}' },
      })) {
        chunks.push([chunk.seq, chunk.payload.case, chunk.payload.value]);
      }
      assert.deepEqual(chunks, [
        [0, "json", "0"],
        [1, "json", "1"],
        [2, "json", "2"],
      ]);
    });

    test("sends native JSON input and reads value chunks", async () => {
      const chunks = [];
      for await (const chunk of client.invoke({
        function: "echo_async",
        input: { case: "value", value: fromJson(ValueSchema, { a: [1, 2] }) },
        accept: Encoding.VALUE,
      })) {
        assert.equal(chunk.payload.case, "value");
        chunks.push(toJson(ValueSchema, chunk.payload.value));
      }
      assert.deepEqual(chunks, [{ a: [1, 2] }]);
    });

    test("an invalid input's error carries a google.rpc.BadRequest", async () => {
      try {
        for await (const _ of client.invoke({
          function: "count_async",
          input: { case: "json", value: '{"n": -1}' },
        })) {
          assert.fail("no chunk expected");
        }
        assert.fail("no error");
      } catch (error) {
        assert.ok(error instanceof ConnectError);
        assert.equal(error.code, Code.InvalidArgument);
        const [badRequest] = error.findDetails(BadRequestSchema);
        assert.deepEqual(
          badRequest?.fieldViolations.map((violation) => violation.field),
          ["n"],
        );
      }
    });

    test("lists the functions", async () => {
      const { functions } = await client.listFunctions({});
      assert.ok(functions.some((info) => info.name === "resumable_ticks" && info.resumable));
    });
  });
}
