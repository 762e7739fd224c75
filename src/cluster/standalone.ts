/**
 * The cluster view of a gateway that runs alone in its process (embedding,
 * single-process tests): it is the whole cluster.
 */
import type { Metrics } from '../observability/metrics.js';
import { counts, type ClusterStats, type ClusterView, type LocalStats } from './view.js';

export class StandaloneCluster implements ClusterView {
  add(): void {}
  remove(): void {}
  serve(): void {}

  async stats(local: LocalStats): Promise<ClusterStats> {
    const byCreator = counts();
    for (const [c, n] of local.byCreator) byCreator[c] = n;
    const byWorker = counts();
    byWorker[String(local.pid)] = local.total;
    return { total_connections: local.total, connections_by_creator: byCreator, connections_by_worker: byWorker, workers: 1, workers_answered: 1 };
  }

  metrics(local: Metrics): Promise<string> {
    return local.registry.metrics();
  }

  ready(): boolean {
    return true;
  }

  /** There is no other node. */
  async deliver(): Promise<boolean> {
    return false;
  }

  async close(): Promise<void> {}
}
