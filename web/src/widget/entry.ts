// site/widget.js: `<script type="module" src=".../widget.js">` defines the elements, with
// the models and the engine's Worker found next to this file (its own origin).
import { define } from "./index";

define();
