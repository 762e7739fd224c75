/** cluster-key-slot (the hash-slot function ioredis uses) ships no typings. */
declare module 'cluster-key-slot' {
  /** The Redis Cluster hash slot (0-16383) of a key or sharded channel, honouring {hash tags}. */
  export default function calculateSlot(key: string | Buffer): number;
}
