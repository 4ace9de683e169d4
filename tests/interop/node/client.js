#!/usr/bin/env node
// A Node.js client of grpc-serverfn, the way another team would write one: stubs loaded at run
// time from protos/serverfn/v1/serverfn.proto with @grpc/proto-loader, calls made with
// @grpc/grpc-js. tests/test_interop_node.py runs it against real servers.
//
//   node client.js TARGET SCENARIO [ARG...] [--googleapis-protos DIR]
//
// It runs one scenario and prints ONE JSON document on stdout describing what it observed
// (chunks in order, decoded; the final status; ...). It exits 0 whenever the scenario ran,
// whatever the server answered (the assertions are the Python test's), and nonzero with a
// message on stderr when it could not run (bad arguments, unloadable protos, a crash).
//
// Scenarios:
//   stream_data_json    Invoke stream_data with no input: json chunks, parsed
//   stream_chat_value   Invoke stream_chat with google.protobuf.Value input: value chunks
//   stream_chat_json    Invoke stream_chat with json input, accept ENCODING_VALUE: value chunks
//   cancel KEY          Invoke wait_async {probe: KEY, chunks: 2}; cancel after the first chunk
//   invalid             Invoke stream_chat with {"message": ""}; decode the BadRequest detail
//                       (needs --googleapis-protos DIR, the directory holding google/rpc/*.proto;
//                       given, every scenario decodes its grpc-status-details-bin trailer)
//   not_found [NAME]    Invoke a function that is not registered
//   list                ListFunctions

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS = path.resolve(__dirname, '..', '..', '..', 'protos');
const DEADLINE_MS = 30_000;

// keepCase: false (proto-loader's default) everywhere: fields are lowerCamelCase, as in proto3
// JSON (inputSchema, structValue, takesInput).
const LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS],
};

const CODE_NAMES = Object.fromEntries(
  Object.entries(grpc.status).map(([name, code]) => [code, name]),
);

function loadStub(target) {
  const definition = protoLoader.loadSync('serverfn/v1/serverfn.proto', LOADER_OPTIONS);
  const { ServerFunctions } = grpc.loadPackageDefinition(definition).serverfn.v1;
  return new ServerFunctions(target, grpc.credentials.createInsecure());
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

// google.protobuf.Value / Struct / ListValue, as proto-loader decodes them (oneofs: true gives
// the set member's name in `kind`), to plain JavaScript values.
function fromValue(value) {
  switch (value.kind) {
    case 'nullValue':
      return null;
    case 'numberValue':
      return value.numberValue;
    case 'stringValue':
      return value.stringValue;
    case 'boolValue':
      return value.boolValue;
    case 'structValue':
      return fromStruct(value.structValue);
    case 'listValue':
      return (value.listValue.values || []).map(fromValue);
    default:
      throw new Error(`google.protobuf.Value with no kind set: ${JSON.stringify(value)}`);
  }
}

function fromStruct(struct) {
  const fields = Object.entries(struct.fields || {});
  return Object.fromEntries(fields.map(([key, v]) => [key, fromValue(v)]));
}

// Plain JavaScript values to google.protobuf.Value, as proto-loader encodes them.
function toValue(data) {
  if (data === null) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(data)) return { listValue: { values: data.map(toValue) } };
  switch (typeof data) {
    case 'number':
      return { numberValue: data };
    case 'string':
      return { stringValue: data };
    case 'boolean':
      return { boolValue: data };
    case 'object':
      return {
        structValue: {
          fields: Object.fromEntries(Object.entries(data).map(([key, v]) => [key, toValue(v)])),
        },
      };
    default:
      throw new Error(`cannot encode ${typeof data} as google.protobuf.Value`);
  }
}

// The final status as grpc-js reports it, plus (given the googleapis protos) the decoded
// google.rpc.Status of its grpc-status-details-bin trailer.
function describeStatus(status, rpcRoot) {
  return {
    code: status.code,
    code_name: CODE_NAMES[status.code] ?? String(status.code),
    details: status.details,
    metadata_keys: Object.keys(status.metadata ? status.metadata.getMap() : {}).sort(),
    rpc_status: rpcRoot && status.metadata ? decodeStatusDetails(rpcRoot, status.metadata) : null,
  };
}

// Runs one Invoke call to its end; resolves with every chunk it delivered and the final status.
// onChunk(chunk, call) may cancel the call.
function invoke(stub, request, onChunk) {
  return new Promise((resolve) => {
    const chunks = [];
    const call = stub.Invoke(request, { deadline: deadline() });
    call.on('data', (chunk) => {
      let decoded;
      if (chunk.payload === 'json') decoded = JSON.parse(chunk.json);
      else if (chunk.payload === 'value') decoded = fromValue(chunk.value);
      else decoded = undefined;
      chunks.push({ seq: chunk.seq, payload: chunk.payload ?? null, data: decoded });
      if (onChunk) onChunk(chunk, call);
    });
    // Every error also arrives as the 'status' event; listening here keeps it from being thrown.
    call.on('error', () => {});
    call.on('status', (status) => resolve({ chunks, status, call }));
  });
}

function listFunctions(stub) {
  return new Promise((resolve) => {
    stub.ListFunctions({}, { deadline: deadline() }, (error, response) => {
      resolve({ error, response });
    });
  });
}

// google.rpc.Status and the standard error details, loaded from googleapis' own .proto files.
function loadRpcProtos(includeDir) {
  if (!fs.existsSync(path.join(includeDir, 'google', 'rpc', 'status.proto'))) {
    throw new Error(`--googleapis-protos ${includeDir}: no google/rpc/status.proto there`);
  }
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    const candidate = path.join(includeDir, target);
    // google/protobuf/*.proto are not in googleapis' tree: protobufjs has them built in.
    return fs.existsSync(candidate) ? candidate : target;
  };
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
  root.resolveAll();
  return root;
}

function decodeStatusDetails(root, metadata) {
  const values = metadata.get('grpc-status-details-bin');
  if (values.length === 0) return null;
  const Status = root.lookupType('google.rpc.Status');
  const status = Status.decode(values[0]);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((any) => {
      // protobufjs's built-in google.protobuf.Any (used for google/protobuf/any.proto) names
      // its first field type_url whatever keepCase says; every other field here is camelCase.
      const typeUrl = any.type_url;
      const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
      const detail = { type_url: typeUrl };
      const type = root.lookup(typeName);
      if (typeName === 'google.rpc.BadRequest') {
        const badRequest = type.decode(any.value);
        detail.field_violations = badRequest.fieldViolations.map((violation) => ({
          field: violation.field,
          description: violation.description,
        }));
      } else if (type instanceof protobuf.Type) {
        detail.decoded = type.toObject(type.decode(any.value), { enums: String, longs: String });
      }
      return detail;
    }),
  };
}

async function run(target, scenario, args, options) {
  const includeDir = options['googleapis-protos'];
  if (scenario === 'invalid' && !includeDir) {
    throw new Error('the invalid scenario needs --googleapis-protos DIR');
  }
  const rpcRoot = includeDir ? loadRpcProtos(includeDir) : null;
  const stub = loadStub(target);
  try {
    switch (scenario) {
      case 'stream_data_json': {
        const { chunks, status } = await invoke(stub, { function: 'stream_data' });
        return { chunks, status: describeStatus(status, rpcRoot) };
      }
      case 'stream_chat_value': {
        const request = { function: 'stream_chat', value: toValue({ message: 'hi' }) };
        const { chunks, status } = await invoke(stub, request);
        return { chunks, status: describeStatus(status, rpcRoot) };
      }
      case 'stream_chat_json': {
        const request = {
          function: 'stream_chat',
          json: '{"message":"hi"}',
          accept: 'ENCODING_VALUE',
        };
        const { chunks, status } = await invoke(stub, request);
        return { chunks, status: describeStatus(status, rpcRoot) };
      }
      case 'cancel': {
        const [key] = args;
        if (!key) throw new Error('the cancel scenario needs the probe KEY');
        const request = { function: 'wait_async', json: JSON.stringify({ probe: key, chunks: 2 }) };
        let cancelledAfter = null;
        const { chunks, status } = await invoke(stub, request, (chunk, call) => {
          if (cancelledAfter === null) {
            cancelledAfter = chunk.seq;
            call.cancel();
          }
        });
        return {
          cancelled_after_seq: cancelledAfter,
          chunks,
          status: describeStatus(status, rpcRoot),
        };
      }
      case 'invalid': {
        const request = { function: 'stream_chat', json: '{"message": ""}' };
        const { chunks, status } = await invoke(stub, request);
        return { chunks, status: describeStatus(status, rpcRoot) };
      }
      case 'not_found': {
        const name = args[0] || 'no_such_function';
        const { chunks, status } = await invoke(stub, { function: name });
        return { function: name, chunks, status: describeStatus(status, rpcRoot) };
      }
      case 'list': {
        const { error, response } = await listFunctions(stub);
        if (error) return { error: describeStatus(error, rpcRoot) };
        return {
          functions: response.functions.map((info) => ({
            name: info.name,
            description: info.description,
            method: info.method,
            streaming: info.streaming,
            takes_input: info.takesInput,
            input_required: info.inputRequired,
            input_schema: info.inputSchema ? fromStruct(info.inputSchema) : null,
            output_schema: info.outputSchema ? fromStruct(info.outputSchema) : null,
          })),
        };
      }
      default:
        throw new Error(`unknown scenario: ${scenario}`);
    }
  } finally {
    stub.close();
  }
}

async function main() {
  const { values: options, positionals } = parseArgs({
    options: { 'googleapis-protos': { type: 'string' } },
    allowPositionals: true,
  });
  const [target, scenario, ...args] = positionals;
  if (!target || !scenario) {
    throw new Error('usage: node client.js TARGET SCENARIO [ARG...] [--googleapis-protos DIR]');
  }
  const observed = await run(target, scenario, args, options);
  process.stdout.write(`${JSON.stringify({ scenario, target, ...observed })}\n`);
}

main().catch((error) => {
  process.stderr.write(`client.js: ${error && error.stack ? error.stack : error}\n`);
  process.exitCode = 2;
});
