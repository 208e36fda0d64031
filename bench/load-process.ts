import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import type { LoadMessage, LoadPlan, LoadResult } from './load.ts';
import { root } from './processes.ts';

export type LoadTick = Extract<LoadMessage, { type: 'tick' }>;

/**
 * The parent's side of the load generator: forks bench/load.ts for each workload, relays its
 * ticks and resolves with its result. The child in flight is killed when the run is torn down.
 */
export class LoadGenerator {
  private child: ChildProcess | undefined;

  run(plan: LoadPlan, onTick: (tick: LoadTick) => void): Promise<LoadResult> {
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
