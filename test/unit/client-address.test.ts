import { describe, expect, it } from 'vitest';
import { addressKey } from '../../apps/api/src/services/auth-failures.ts';

describe('addressKey: what failed authentications are counted under', () => {
  it('counts an IPv4 address as itself, also when it arrives mapped into IPv6', () => {
    expect(addressKey('127.0.0.1')).toBe('127.0.0.1');
    expect(addressKey('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(addressKey('::FFFF:10.1.2.3')).toBe('10.1.2.3');
  });

  it('counts an IPv6 address by its /64, however it is written', () => {
    const key = '2001:db8:85a3:8d3::/64';
    expect(addressKey('2001:db8:85a3:8d3:1319:8a2e:370:7348')).toBe(key);
    expect(addressKey('2001:0db8:85a3:08d3:ffff:ffff:ffff:ffff')).toBe(key);
    expect(addressKey('2001:DB8:85A3:8D3::1')).toBe(key);
    expect(addressKey('2001:db8:85a3:8d3::1%eth0')).toBe(key);
    expect(addressKey('2001:db8:85a3:8d4::1')).not.toBe(key);
  });

  it('expands :: wherever it stands, a dotted IPv4 ending included', () => {
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('fe80::1')).toBe('fe80:0:0:0::/64');
    expect(addressKey('2001:db8::')).toBe('2001:db8:0:0::/64');
    expect(addressKey('a:b::c:d:e:1.2.3.4')).toBe('a:b:0:c::/64');
    expect(addressKey('64:ff9b::192.0.2.1')).toBe('64:ff9b:0:0::/64');
  });

  it('keeps anything else as it is', () => {
    expect(addressKey('unknown')).toBe('unknown');
  });
});
