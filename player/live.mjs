/**
 * A live stream from the VOD one: the origin serves each rendition's media playlist as a
 * sliding window that advances with the wall clock, as a live packager would, over the same
 * segment files. Viewers of a live stream all play near the live edge, the case P2P players
 * are built for: the segment one viewer fetched first is the one the others need next.
 * @module
 */

/**
 * @typedef {object} VodPlaylist
 * @property {string[]} header tags before the first segment, without PLAYLIST-TYPE and
 *   MEDIA-SEQUENCE (the live playlist writes its own)
 * @property {{extinf: string, uri: string, duration: number}[]} segments
 */

/**
 * Parses a VOD media playlist (ffmpeg's: tags, then `#EXTINF` and a URI per segment, then
 * `#EXT-X-ENDLIST`).
 * @param {string} text
 * @returns {VodPlaylist}
 */
export function parseVod(text) {
  /** @type {string[]} */
  const header = [];
  /** @type {VodPlaylist['segments']} */
  const segments = [];
  /** @type {string | null} */
  let extinf = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line === '#EXT-X-ENDLIST' || line.startsWith('#EXT-X-PLAYLIST-TYPE') || line.startsWith('#EXT-X-MEDIA-SEQUENCE')) continue;
    if (line.startsWith('#EXTINF:')) {
      extinf = line;
    } else if (!line.startsWith('#')) {
      if (extinf === null) throw new Error(`segment ${line} without #EXTINF`);
      const duration = Number.parseFloat(extinf.slice('#EXTINF:'.length));
      if (!(duration > 0)) throw new Error(`bad duration in ${extinf}`);
      segments.push({ extinf, uri: line, duration });
      extinf = null;
    } else if (segments.length === 0) {
      header.push(line);
    }
  }
  if (!segments.length) throw new Error('no segments in the playlist');
  return { header, segments };
}

/**
 * The live window at `elapsedSecs` after the stream started: the segments whose end time has
 * passed (plus `window` of them at once, so a player has a window from the first second), the
 * last `window` of them listed; `#EXT-X-ENDLIST` when the VOD runs out.
 * @param {VodPlaylist} vod
 * @param {number} elapsedSecs
 * @param {number} [window] segments listed: 15 (30 s), as p2p-media-loader advises for live
 *   (15-20), so players can play far enough behind the edge to fetch from each other
 * @returns {string}
 */
export function liveWindow(vod, elapsedSecs, window = 15) {
  let published = window;
  let t = 0;
  for (let i = 0; i < vod.segments.length - window; i++) {
    t += vod.segments[i].duration;
    if (t > elapsedSecs) break;
    published += 1;
  }
  published = Math.min(published, vod.segments.length);
  const first = Math.max(0, published - window);
  const lines = [...vod.header.filter((l) => !l.startsWith('#EXT-X-MAP')), `#EXT-X-MEDIA-SEQUENCE:${first}`];
  const map = vod.header.find((l) => l.startsWith('#EXT-X-MAP'));
  if (map) lines.push(map);
  for (const s of vod.segments.slice(first, published)) lines.push(s.extinf, s.uri);
  if (published === vod.segments.length) lines.push('#EXT-X-ENDLIST');
  return `${lines.join('\n')}\n`;
}
