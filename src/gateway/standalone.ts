/**
 * The cluster view of a gateway that runs alone in its process (embedding,
 * single-process tests): it is the whole cluster.
 */
import type { ClusterStats, LocalStats } from '../primary/ipc.js';
import type { ClusterView } from './gateway.js';
import type { Metrics } from '../observability/metrics.js';

export class StandaloneCluster implements ClusterView {
  async stats(local: LocalStats): Promise<ClusterStats> {
    return {
      total_connections: local.total,
      connections_by_creator: { ...local.byCreator },
      connections_by_worker: { [String(local.pid)]: local.total },
      workers: 1,
      workers_answered: 1,
    };
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
}
