/**
 * swarmtrack browser SDK: WebRTC data channels between the viewers of a video, signaled through
 * a swarmtrack tracker. See README.md in this folder.
 * @module
 */
export { SwarmClient } from './src/client.js';
export { CandidateBatcher } from './src/batcher.js';
export { minify, expand, minifyCandidate, expandCandidate, parseDataChannel } from './src/sdp.js';
export { encode as encodeMsgpack, decode as decodeMsgpack, MsgpackError } from './src/msgpack.js';
export { decodeServerFrame, encodeFrame } from './src/wire.js';
