import type { Config } from '../config/index.js';
import type { AiEngine } from './engine.js';
import { EchoEngine } from './echo.js';
import { HttpEngine } from './http.js';
import { GuardedEngine } from './guard.js';

export type { AiEngine, Query } from './engine.js';

/** The engine the configuration asks for: HTTP when AI_ENGINE_URL is set, else the embedded echo. */
export function createEngine(
  cfg: Pick<
    Config,
    | 'aiEngineUrl'
    | 'aiEngineTimeoutMs'
    | 'aiEngineFirstPieceTimeoutMs'
    | 'aiEngineIdleTimeoutMs'
    | 'aiEngineMaxResponseBytes'
    | 'aiEngineMaxInflight'
    | 'aiEngineConnections'
    | 'aiEngineMaxInflightPerCreator'
    | 'aiBreakerFailures'
    | 'aiBreakerCooldownMs'
    | 'aiEchoDelayMs'
  >,
): AiEngine {
  if (!cfg.aiEngineUrl) return new EchoEngine(cfg.aiEchoDelayMs);
  const http = new HttpEngine({
    url: cfg.aiEngineUrl,
    timeoutMs: cfg.aiEngineTimeoutMs,
    firstPieceTimeoutMs: cfg.aiEngineFirstPieceTimeoutMs,
    idleTimeoutMs: cfg.aiEngineIdleTimeoutMs,
    maxResponseBytes: cfg.aiEngineMaxResponseBytes,
    maxInflight: cfg.aiEngineMaxInflight,
    connections: cfg.aiEngineConnections,
  });
  return new GuardedEngine(http, {
    maxInflightPerCreator: cfg.aiEngineMaxInflightPerCreator,
    failureThreshold: cfg.aiBreakerFailures,
    cooldownMs: cfg.aiBreakerCooldownMs,
  });
}
