/**
 * For pages without a bundler: `<script type="module" src=".../global.js">` puts the SDK on
 * `window.swarmtrack`.
 * @module
 */
import * as swarmtrack from './index.js';

globalThis.swarmtrack = swarmtrack;
