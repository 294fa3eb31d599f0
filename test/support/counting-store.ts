import type { ItemKey, QueryOptions, Store, Write } from '../../functions/ports/store.js';

/** A store (the real SQLite one, in the tests) that records what the control plane asks of it. */
export class CountingStore implements Store {
  gets: ItemKey[] = [];
  queries: QueryOptions[] = [];
  transactions: Write[][] = [];
  constructor(private readonly inner: Store) {}
  get<T>(key: ItemKey) {
    this.gets.push(key);
    return this.inner.get<T>(key);
  }
  query<T>(options: QueryOptions) {
    this.queries.push(options);
    return this.inner.query<T>(options);
  }
  transact(writes: readonly Write[]) {
    this.transactions.push([...writes]);
    return this.inner.transact(writes);
  }
  close() {
    return this.inner.close();
  }
  /** Forgets what was recorded so far. */
  reset(): void {
    this.gets = [];
    this.queries = [];
    this.transactions = [];
  }
}
