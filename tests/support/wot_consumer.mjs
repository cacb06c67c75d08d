// A W3C WoT consumer (node-wot, @node-wot/core + @node-wot/binding-http) used by tests/process: fetches a Thing
// Description over HTTPS, then reads one property and invokes one action through the TD's forms, with the OAuth2
// client credentials the TD's security definition asks for. Prints one JSON line:
// {"property": <value read>, "action": <the invocation's JSON answer>}.
//
// Environment: NODE_MODULES (where npm installed node-wot), TD_URL and TD_TOKEN (a bearer token allowed to read
// the TD), CLIENT_ID and CLIENT_SECRET (for node-wot's own token request), PROPERTY, ACTION, ACTION_INPUT (JSON),
// ACTION_WAIT (optional: the `wait` URI variable). A TLS certificate that is not publicly trusted is passed the
// Node way, NODE_EXTRA_CA_CERTS.
import { createRequire } from "node:module";

const require = createRequire(process.env.NODE_MODULES + "/");
const { Servient } = require("@node-wot/core");
const { HttpsClientFactory } = require("@node-wot/binding-http");

const answer = await fetch(process.env.TD_URL, { headers: { Authorization: `Bearer ${process.env.TD_TOKEN}` } });
if (!answer.ok) throw new Error(`TD request: ${answer.status} ${await answer.text()}`);
const td = await answer.json();

const servient = new Servient();
servient.addClientFactory(new HttpsClientFactory({}));
servient.addCredentials({ [td.id]: { clientId: process.env.CLIENT_ID, clientSecret: process.env.CLIENT_SECRET } });
const WoT = await servient.start();
try {
  const thing = await WoT.consume(td);
  const property = await (await thing.readProperty(process.env.PROPERTY)).value();
  const options = process.env.ACTION_WAIT ? { uriVariables: { wait: Number(process.env.ACTION_WAIT) } } : undefined;
  const invoked = await thing.invokeAction(process.env.ACTION, JSON.parse(process.env.ACTION_INPUT), options);
  const action = JSON.parse(Buffer.from(await invoked.arrayBuffer()).toString("utf8"));
  console.log(JSON.stringify({ property, action }));
} finally {
  await servient.shutdown();
}
