/**
 * The client's own IP address, behind a load balancer: what the per-IP
 * limits (CONNECT_RATE_PER_IP, MAX_CONNECTIONS_PER_IP) key on, and what the
 * logs show.
 *
 * Only a peer listed in TRUSTED_PROXIES is believed:
 *   - a layer-4 balancer sends the PROXY protocol v2 header (HAProxy
 *     `send-proxy-v2`): the pinned uWS binary parses it
 *     (getProxiedRemoteAddressAsText, tested);
 *   - an HTTP balancer sets X-Forwarded-For: the rightmost address that is
 *     not itself a trusted proxy is the client.
 * Anyone else gets its TCP peer address, whatever PROXY header or
 * X-Forwarded-For it sends (uWS parses a PROXY header from any peer: it is
 * ignored unless the peer is trusted), so an untrusted sender cannot choose
 * the address it is limited under.
 */
import { BlockList, isIP } from 'node:net';
import type { HttpRequest } from '@trufflesuite/uws-js-unofficial';
import type { Res } from './http.js';
import { Buffer } from 'node:buffer';

/** TRUSTED_PROXIES parsed: addresses and CIDR ranges (IPv4 or IPv6). */
export class TrustedProxies {
  readonly #list = new BlockList();
  readonly size: number;

  constructor(entries: readonly string[]) {
    for (const e of entries) {
      const [addr, bits] = e.split('/');
      const type = isIP(addr!) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.#list.addAddress(addr!, type);
      else this.#list.addSubnet(addr!, Number(bits), type);
    }
    this.size = entries.length;
  }

  has(ip: string): boolean {
    if (this.size === 0) return false; // the default: no address parsed on a connect
    const v = isIP(ip);
    if (v === 0) return false;
    return this.#list.check(ip, v === 6 ? 'ipv6' : 'ipv4');
  }
}

const text = (b: ArrayBuffer): string => Buffer.from(b).toString();

/** The client address of a request (call in the handler, before any await: it reads `req`). */
export function clientIp(res: Res, req: HttpRequest, trusted: TrustedProxies): string {
  const peer = text(res.getRemoteAddressAsText());
  if (!trusted.has(peer)) return peer;
  const proxied = text(res.getProxiedRemoteAddressAsText());
  if (proxied !== '') return proxied;
  const xff = req.getHeader('x-forwarded-for');
  if (xff !== '') {
    const hops = xff.split(',').map((h) => h.trim());
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!;
      if (isIP(hop) === 0) break; // garbage: stop at the last address we can trust the chain to
      if (!trusted.has(hop)) return hop;
    }
  }
  return peer;
}
