import BetterSqlite3 from 'better-sqlite3';
import type { NodeRecord } from '../../functions/domain/resource/node-record.js';
import type { JobRecord } from '../../functions/domain/scheduling/job-record.js';
import type { TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import type { StoredState } from './invariants.js';

interface ItemRow {
  pk: string;
  sk: string;
  data: string;
  by_pool_pk: string | null;
  by_due_pk: string | null;
}

/**
 * The whole state of an embedded control plane, read straight from its SQLite file (read-only, so
 * a live control plane may keep writing): every job, task and node item with the index keys each
 * task carries.
 */
export function readSqliteState(file: string, readAt = Date.now()): StoredState {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  try {
    // One read transaction: a consistent snapshot even while the control plane writes.
    const rows = db.transaction(
      () =>
        db
          .prepare(
            "SELECT pk, sk, data, by_pool_pk, by_due_pk FROM items WHERE pk LIKE 'JOB#%' OR (pk LIKE 'NODE#%' AND sk = 'NODE')",
          )
          .all() as ItemRow[],
    )();
    return fromItems(
      rows.map((r) => ({
        pk: r.pk,
        sk: r.sk,
        data: JSON.parse(r.data) as unknown,
        byPool: r.by_pool_pk,
        byDue: r.by_due_pk,
      })),
      readAt,
    );
  } finally {
    db.close();
  }
}

/** One stored item as the readers hand it over: its key, its data, the index partitions it is in. */
export interface StoredItem {
  pk: string;
  sk: string;
  data: unknown;
  byPool?: string | null;
  byDue?: string | null;
}

export function fromItems(items: readonly StoredItem[], readAt: number, withIndexes = true): StoredState {
  const state: StoredState = {
    readAt,
    jobs: [],
    tasks: [],
    nodes: [],
    ...(withIndexes ? { taskIndexes: new Map() } : {}),
  };
  for (const item of items) {
    if (item.pk.startsWith('JOB#') && item.sk === 'JOB') state.jobs.push(item.data as JobRecord);
    else if (item.pk.startsWith('JOB#') && item.sk.startsWith('TASK#')) {
      const task = item.data as TaskRecord;
      state.tasks.push(task);
      state.taskIndexes?.set(task.id, {
        ...(item.byPool ? { byPool: item.byPool } : {}),
        ...(item.byDue ? { byDue: item.byDue } : {}),
      });
    } else if (item.pk.startsWith('NODE#') && item.sk === 'NODE') state.nodes.push(item.data as NodeRecord);
  }
  return state;
}

/** Tasks not yet ended (every open task is in the pool or due index), counted cheaply for progress. */
export function openTaskCount(file: string): number {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  try {
    const row = db
      .prepare(
        "SELECT count(*) AS n FROM items WHERE (by_pool_pk LIKE 'POOL#%') OR by_due_pk LIKE 'DUE#lease#%' OR by_due_pk LIKE 'DUE#verify#%'",
      )
      .get() as { n: number };
    return row.n;
  } finally {
    db.close();
  }
}
