// `npm run provider:sim`: the top-up simulator (API.md's phone-number table) over the JSON
// protocol of `PROVIDER=http`, so that several worker processes share one provider, as they would
// a real one. Point the workers at it with PROVIDER=http PROVIDER_URL=<the url printed>
// PROVIDER_API_KEY=<the same key>.
import { startProviderSim } from '@cs/delivery';

const port = Number(process.env.PROVIDER_SIM_PORT ?? 4010);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  console.error(`PROVIDER_SIM_PORT must be a port number, not ${process.env.PROVIDER_SIM_PORT}`);
  process.exit(1);
}
const apiKey = process.env.PROVIDER_API_KEY || 'dev-provider-key';

const sim = await startProviderSim({ port, apiKey });
console.log(`provider simulator listening on ${sim.url} (key ${apiKey})`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await sim.close();
  process.exit(0);
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
