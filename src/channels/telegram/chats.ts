/**
 * Which Telegram chats of a creator opted in to its broadcasts (/start,
 * /stop). Shared by every worker and host: in Redis (a set per creator,
 * `<prefix>{tg/<creator>}:chats`), in the primary (embedded mode, over
 * IPC), or in memory (a lone gateway, tests).
 */
import type { RedisLink } from '../../redis/link.js';
import type { EmbeddedCluster } from '../../cluster/embedded.js';

export interface ChatList {
  add(creatorId: string, chatId: string): Promise<void>;
  remove(creatorId: string, chatId: string): Promise<void>;
  list(creatorId: string): Promise<string[]>;
}

export class MemoryChatList implements ChatList {
  readonly #chats = new Map<string, Set<string>>();

  async add(creatorId: string, chatId: string): Promise<void> {
    let s = this.#chats.get(creatorId);
    if (!s) this.#chats.set(creatorId, (s = new Set()));
    s.add(chatId);
  }

  async remove(creatorId: string, chatId: string): Promise<void> {
    const s = this.#chats.get(creatorId);
    s?.delete(chatId);
    if (s?.size === 0) this.#chats.delete(creatorId);
  }

  async list(creatorId: string): Promise<string[]> {
    return [...(this.#chats.get(creatorId) ?? [])];
  }
}

/** Embedded mode: the primary's MemoryChatList, over IPC. */
export class PrimaryChatList implements ChatList {
  constructor(private readonly host: EmbeddedCluster) {}

  async add(creatorId: string, chatId: string): Promise<void> {
    await this.host.request('chats-add', { arg: creatorId, chat: chatId });
  }

  async remove(creatorId: string, chatId: string): Promise<void> {
    await this.host.request('chats-del', { arg: creatorId, chat: chatId });
  }

  list(creatorId: string): Promise<string[]> {
    return this.host.request('chats', { arg: creatorId });
  }
}

export class RedisChatList implements ChatList {
  constructor(
    private readonly link: RedisLink,
    private readonly prefix: string,
  ) {}

  #key(creatorId: string): string {
    return `${this.prefix}{tg/${creatorId}}:chats`;
  }

  async add(creatorId: string, chatId: string): Promise<void> {
    await this.link.run('telegram opt-in', (c) => c.sadd(this.#key(creatorId), chatId));
  }

  async remove(creatorId: string, chatId: string): Promise<void> {
    await this.link.run('telegram opt-out', (c) => c.srem(this.#key(creatorId), chatId));
  }

  list(creatorId: string): Promise<string[]> {
    return this.link.run('telegram chats', (c) => c.smembers(this.#key(creatorId)));
  }
}
