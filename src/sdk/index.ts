/** The widget SDK's public entry (bundled to dist/sdk/widget.mjs and widget.js, global `ChannelWidget`). */
export { createWidgetClient, WidgetClient } from './client.js';
export type { Position, Status, WidgetClientOptions, WidgetEvents, WsCtor, WsLike } from './client.js';
