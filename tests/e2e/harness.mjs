// End-to-end harness: runs the real `chat` binary and gives tests small helpers.
//
// Usage in a test file:
//
//   import { test, useServer } from './harness.mjs';   // `test`: see "Skipping" in harness/settings.mjs
//   const srv = useServer();           // registers before/after/afterEach hooks
//   test('...', async () => {
//     const [a, b] = srv.users(2);     // user ids unique within this file
//     const conv = await srv.openConversation(a, b);
//     const sa = await srv.connect(a);
//     ...
//   });
//
// The harness is split by job into ./harness/, where each part is documented; this file
// re-exports their public API, so test files import from './harness.mjs' only:
//   harness/settings.mjs   test-run settings from the environment (binary, E2E_MODE,
//                          E2E_NATS_SERVERS), constants, skipping a file (the `test` here)
//   harness/events.mjs     socket event helpers (once, firstOf, collect, expectNone, recordEvents, ...)
//   harness/processes.mjs  the `chat` roles (and nats-servers) as child processes
//   harness/services.mjs   Postgres and NATS: psql, checks, the fault-injection TCP proxy, cleanup
//   harness/server.mjs     useServer(): a test file's whole deployment and its helpers
// Imports point one way, towards settings.mjs: events.mjs and processes.mjs import no other
// part, services.mjs imports settings.mjs (and safeJson from events.mjs), server.mjs all four;
// nothing but this file imports server.mjs.

export {
  test, MODE, NATS_SERVERS, STREAM_REPLICAS, NATS_HOST, NATS_PORT, PG_HOST, PG_PORT, PG_USER,
  USERID_ERROR, chatBinary,
} from './harness/settings.mjs';
export { once, firstOf, collect, expectNone, recordEvents, label, safeJson } from './harness/events.mjs';
export { freePort } from './harness/processes.mjs';
export { psql, natsServerBinary } from './harness/services.mjs';
export { useServer } from './harness/server.mjs';
