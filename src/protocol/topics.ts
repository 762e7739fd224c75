/** uWS / bus topic names. Ids are validated (see auth/ids.ts), so they cannot contain '/'. */
export const creatorTopic = (creatorId: string): string => `c/${creatorId}`;

/** The creator a creator topic (or its msgpack or widget.v2 twin) is for, or undefined. */
export function creatorOfTopic(topic: string): string | undefined {
  if (topic.startsWith('c/')) return topic.slice(2);
  if (topic.startsWith('mc/') || topic.startsWith('2c/')) return topic.slice(3);
  return undefined;
}
