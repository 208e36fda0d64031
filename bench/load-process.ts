import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import type { LoadMessage, LoadPlan, LoadResult } from './load.ts';
import { runWrk } from './load-wrk.ts';
import { root } from './processes.ts';

export type LoadTick = Extract<LoadMessage, { type: 'tick' }>;
export type LoadGeneratorName = 'autocannon' | 'wrk';

/**
 * The parent's side of the load generator: for each workload, forks bench/load.ts (autocannon)
 * or starts wrk (bench/load-wrk.ts), relays its ticks and resolves with its result. The child in
 * flight is killed when the run is torn down.
 */
export class LoadGenerator {
  private child: ChildProcess | undefined;

  constructor(readonly generator: LoadGeneratorName) {}

  run(plan: LoadPlan, onTick: (tick: LoadTick) => void): Promise<LoadResult> {
    if (this.generator === 'wrk') {
      return runWrk(plan, onTick, (child) => {
        this.child = child;
      }).finally(() => {
        this.child = undefined;
      });
    }
    return this.runAutocannon(plan, onTick);
  }

  private runAutocannon(plan: LoadPlan, onTick: (tick: LoadTick) => void): Promise<LoadResult> {
    return new Promise((resolve, reject) => {
      const child = fork(join(root, 'bench/load.ts'), [], {
        cwd: root,
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      this.child = child;
      let done = false;
      child.on('message', (message: LoadMessage) => {
        if (message.type === 'tick') onTick(message);
        else if (message.type === 'done') {
          done = true;
          resolve(message.result);
        } else {
          done = true;
          reject(new Error(`load generator failed: ${message.message}`));
        }
      });
      child.on('exit', (code) => {
        this.child = undefined;
        if (!done) reject(new Error(`load generator exited with ${code} before reporting`));
      });
      child.send(plan);
    });
  }

  kill(): void {
    this.child?.kill('SIGTERM');
  }
}
