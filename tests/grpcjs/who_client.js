// A proxyless client in grpc-js-xds, a third xDS client nobody on this project wrote, run by
// tests/test_grpc_proxyless.py.
//
// Usage: GRPC_XDS_BOOTSTRAP=FILE node who_client.js xds:///SVC.NS:PORT
// Calls `/xdsfleet.test.Who/Ask` every 50 ms and prints one JSON line per answer:
// {"member": NAME} or {"error": TEXT}. Exits 0 when its standard input closes; anything
// grpc-js-xds throws (it once crashed on our outlier detection) ends it non-zero.
'use strict';

require('@grpc/grpc-js-xds').register();
const grpc = require('@grpc/grpc-js');

const target = process.argv[2];
const client = new grpc.Client(target, grpc.credentials.createInsecure());
const identity = (buffer) => buffer;
let stopping = false;

function ask() {
  if (stopping) {
    return;
  }
  const deadline = new Date(Date.now() + 5000);
  client.makeUnaryRequest(
    '/xdsfleet.test.Who/Ask', identity, identity, Buffer.alloc(0), { deadline },
    (error, answer) => {
      const line = error ? { error: error.message } : { member: answer.toString() };
      process.stdout.write(JSON.stringify(line) + '\n');
      setTimeout(ask, 50);
    });
}

process.stdin.on('data', () => {});
process.stdin.on('end', () => {
  stopping = true;
  client.close();
  process.exit(0);
});
ask();
