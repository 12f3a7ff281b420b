/**
 * File patterns for choosing what to download: `*` matches within one path segment, `**` across
 * segments, `?` one character; a pattern ending in `/` matches everything under that folder.
 */
export function globToRegExp(pattern: string): RegExp {
  const full = pattern.endsWith('/') ? `${pattern}**` : pattern;
  let source = '';
  for (let i = 0; i < full.length; i++) {
    const c = full[i]!;
    if (c === '*' && full[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (c === '*') source += '[^/]*';
    else if (c === '?') source += '[^/]';
    else source += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

/** Whether `path` matches any of `patterns`. */
export function matchesAny(path: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => globToRegExp(p).test(path));
}
