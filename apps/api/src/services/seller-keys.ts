import { type AuditEntry, auditEvents, auditRow, type Database, sellers } from '@cs/db';
import type { RedisClient } from '@cs/queue';
import { eq } from 'drizzle-orm';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';

const TTL_MS = 30_000;
const MAX_ENTRIES = 100_000;

export interface KeyOwner {
  sellerId: string;
  isActive: boolean;
}

/**
 * Which seller an api key belongs to, remembered for a while: the lookup is on every request,
 * and an api key never changes owner. Whether the seller is active, and which key is its own, can
 * change, so every change goes through {@link SellerKeys.setActive} or {@link SellerKeys.rotateKey},
 * which drop the entry in every API process (Redis
 * Pub/Sub). Should that message be lost, an entry lives 30 s at most; a sale accepted meanwhile
 * from a seller just deactivated is still refused by the worker (`seller_inactive`).
 */
export class SellerKeys {
  /** Only keys that belong to a seller are kept; past `MAX_ENTRIES` the least recently used goes. */
  private readonly byHash = new LRUCache<string, KeyOwner>({ max: MAX_ENTRIES, ttl: TTL_MS });

  constructor(
    private readonly db: Database,
    private readonly publisher: RedisClient,
    private readonly channel: string,
    private readonly logger: Logger,
  ) {}

  /** Listens for changes made by other API processes. */
  async listen(subscriber: RedisClient): Promise<void> {
    subscriber.on('message', (channel: string, sellerId: string) => {
      if (channel === this.channel) this.forget(sellerId);
    });
    await subscriber.subscribe(this.channel);
  }

  async owner(keyHash: string): Promise<KeyOwner | null> {
    const cached = this.byHash.get(keyHash);
    if (cached) return cached;
    const [row] = await this.db
      .select({ sellerId: sellers.id, isActive: sellers.isActive })
      .from(sellers)
      .where(eq(sellers.apiKeyHash, keyHash))
      .limit(1);
    if (row) this.byHash.set(keyHash, row);
    return row ?? null;
  }

  /** Activates or deactivates a seller, with its audit row; every API process sees it at once. */
  async setActive(sellerId: string, isActive: boolean, audit: AuditEntry) {
    const updated = await this.db.transaction(async (tx) => {
      const [row] = await tx.update(sellers).set({ isActive }).where(eq(sellers.id, sellerId)).returning();
      await tx.insert(auditEvents).values(auditRow(audit));
      return row;
    });
    await this.announce(sellerId);
    return updated;
  }

  /**
   * Gives a seller a new api key, with its audit row: the old key is refused at once here, and in
   * the other API processes as soon as the change reaches them (Redis Pub/Sub, well within a second).
   */
  async rotateKey(sellerId: string, keyHash: string, audit: AuditEntry): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.update(sellers).set({ apiKeyHash: keyHash }).where(eq(sellers.id, sellerId));
      await tx.insert(auditEvents).values(auditRow(audit));
    });
    await this.announce(sellerId);
  }

  private async announce(sellerId: string): Promise<void> {
    this.forget(sellerId);
    await this.publisher.publish(this.channel, sellerId).catch((err: unknown) => {
      this.logger.warn({ err, sellerId }, 'could not tell other API processes; their cached entry expires in 30 s');
    });
  }

  private forget(sellerId: string): void {
    // Collected before deleting: the cache is not changed under its own iterator.
    const hashes = [...this.byHash.entries()].filter(([, owner]) => owner.sellerId === sellerId).map(([hash]) => hash);
    for (const hash of hashes) this.byHash.delete(hash);
  }
}
