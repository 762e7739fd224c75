/** uWS / bus topic names. Ids are validated (see auth/ids.ts), so they cannot contain '/'. */
export const creatorTopic = (creatorId: string): string => `c/${creatorId}`;
export const connectionTopic = (connectionId: string): string => `k/${connectionId}`;
