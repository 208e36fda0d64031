import { afterAll, beforeAll, describe, it } from 'vitest';
import { Client } from './support/http.ts';
import { describeScenario, runRequiredScenario } from './support/scenario.ts';
import { System } from './support/system.ts';

describe('the required scenario, over HTTP with two worker processes', () => {
  let system: System;
  let client: Client;

  beforeAll(async () => {
    system = await System.start({ workers: 2 });
    client = new Client(system.baseUrl);
  });
  afterAll(() => system?.stop());

  it('2 sellers, 10 approved credit requests of 1,000,000, 1,000 sales of 5,000: each ends at 2,500,000 and reconciles', async () => {
    console.log(describeScenario('required scenario', await runRequiredScenario(client)));
  });
});
