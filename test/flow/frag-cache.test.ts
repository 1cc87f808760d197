/** FragCache (src/flow/frag-cache.ts): later fragments find the flow their first fragment named. */
import test from 'ava';
import { FragCache, type FragCacheTable } from '../../src/flow/frag-cache';
import { keyFromParts } from '../../src/packet/flow-key';

/** A stand-in flow table: entry id → created second; absent = not live; expiry by deadline. */
class Entries implements FragCacheTable {
  readonly created_ = new Map<number, number>();
  readonly deadline = new Map<number, number>();
  isLive(id: number): boolean {
    return this.created_.has(id);
  }
  created(id: number): number {
    return this.created_.get(id) ?? 0;
  }
  isExpired(id: number, nowSec: number): boolean {
    return nowSec > (this.deadline.get(id) ?? Infinity);
  }
}

const words = (src: string, dst: string, sport = 0, dport = 0, proto = 17): Uint32Array => new Uint32Array(keyFromParts(src, dst, sport, dport, proto).buffer);

test('hit for the same (src, dst, proto, id); miss for another id, address, protocol or family', (t) => {
  const c = new FragCache({ slots: 64, seed: 1 });
  const tb = new Entries();
  tb.created_.set(5, 100);
  c.insert(words('10.0.0.1', '10.0.0.2'), 0x1234, 5, 100, 100);
  t.is(c.lookup(words('10.0.0.1', '10.0.0.2'), 0x1234, 101, tb), 5);
  t.is(c.lookup(words('10.0.0.1', '10.0.0.2'), 0x1235, 101, tb), -1, 'other id');
  t.is(c.lookup(words('10.0.0.1', '10.0.0.3'), 0x1234, 101, tb), -1, 'other destination');
  t.is(c.lookup(words('10.0.0.1', '10.0.0.2', 0, 0, 6), 0x1234, 101, tb), -1, 'other protocol');
  t.is(c.lookup(words('::ffff:10.0.0.1', '::ffff:10.0.0.2'), 0x1234, 101, tb), -1, 'an IPv6 datagram between IPv4-mapped addresses is another family');
  t.is(c.lookup(words('fd00::1', 'fd00::2'), 0x1234, 101, tb), -1, 'IPv6');
  t.is(c.lookup(words('10.0.0.1', '10.0.0.2', 53, 4000), 0x1234, 101, tb), 5, 'the port word is ignored (fragment keys have ports 0)');
  t.is(c.hits, 2);
  t.is(c.misses, 5);
});

test('an entry answers for ttlSec seconds, and only while its flow entry is live, unexpired and the same flow', (t) => {
  const c = new FragCache({ slots: 64, ttlSec: 30, seed: 2 });
  const tb = new Entries();
  const k = words('fd00::1', 'fd00::2');
  tb.created_.set(9, 50);
  c.insert(k, 0xdeadbeef, 9, 50, 60);
  t.is(c.lookup(k, 0xdeadbeef, 90, tb), 9, 'at now + ttl');
  t.is(c.lookup(k, 0xdeadbeef, 91, tb), -1, 'after the reassembly timeout');
  c.insert(k, 0xdeadbeef, 9, 50, 60);
  tb.created_.set(9, 61);
  t.is(c.lookup(k, 0xdeadbeef, 62, tb), -1, 'entry id reused by another flow');
  tb.created_.set(9, 50);
  t.is(c.lookup(k, 0xdeadbeef, 62, tb), -1, 'a stale entry is forgotten once seen');
  c.insert(k, 0xdeadbeef, 9, 50, 60);
  tb.created_.delete(9);
  t.is(c.lookup(k, 0xdeadbeef, 62, tb), -1, 'flow removed');
  tb.created_.set(9, 50);
  tb.deadline.set(9, 61);
  c.insert(k, 0xdeadbeef, 9, 50, 60);
  t.is(c.lookup(k, 0xdeadbeef, 62, tb), -1, 'flow expired');
});

test('direct-mapped: a colliding insert replaces the older entry; clear() forgets everything; sizes round up', (t) => {
  const c = new FragCache({ slots: 16, seed: 3 });
  t.is(c.slots, 16);
  t.is(new FragCache({ slots: 1000 }).slots, 1024);
  const tb = new Entries();
  for (let id = 0; id < 64; id++) tb.created_.set(id, 1);
  for (let id = 0; id < 64; id++) c.insert(words('10.1.0.1', '10.1.0.2'), id, id, 1, 1);
  let found = 0;
  for (let id = 0; id < 64; id++) {
    const r = c.lookup(words('10.1.0.1', '10.1.0.2'), id, 1, tb);
    if (r >= 0) {
      t.is(r, id, 'a hit is always the right flow');
      found++;
    }
  }
  t.true(found > 0 && found <= 16, `${found} of 64 kept in 16 slots`);
  c.clear();
  for (let id = 0; id < 64; id++) t.is(c.lookup(words('10.1.0.1', '10.1.0.2'), id, 1, tb), -1);
});
