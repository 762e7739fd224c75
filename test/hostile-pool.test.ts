// The hostile-frame suite again, every frame validated in the piscina pool.
process.env.TEST_VALIDATION_MODE = 'pool';
await import('./hostile.test.js');
