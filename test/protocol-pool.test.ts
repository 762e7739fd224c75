// The whole protocol suite again, every frame validated in the piscina pool.
process.env.TEST_VALIDATION_MODE = 'pool';
await import('./protocol.test.js');
