/** Entry point: the cluster primary supervises; workers serve. Nothing else happens here. */
import cluster from 'node:cluster';

if (cluster.isPrimary) {
  const { runPrimary } = await import('./primary/supervisor.js');
  await runPrimary();
} else {
  const { runWorker } = await import('./gateway/worker.js');
  await runWorker();
}
