import type { Store, StoredItem } from '../../ports/store.js';
import { jobPk } from './job-record.js';
import type { ScheduleMessage } from './messages.js';
import type { Router } from './router.js';
import type { TaskRecord } from './task-record.js';

/** The schedule queue's consumer: routes a job's unrouted tasks. Idempotent by construction. */
export class Scheduler {
  constructor(
    private readonly store: Store,
    private readonly router: Router,
  ) {}

  async schedule(message: ScheduleMessage): Promise<number> {
    const page = await this.store.query<TaskRecord>({ pk: jobPk(message.jobId), skPrefix: 'TASK#', limit: 1000 });
    return this.router.route(page.items as StoredItem<TaskRecord>[]);
  }
}
