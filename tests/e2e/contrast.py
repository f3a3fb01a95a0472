"""Text contrast inside the widgets, measured in the page (WCAG 2 contrast ratio of text on its background)."""

from __future__ import annotations

# For every visible element with its own text under `selector`: the text colour and the background it sits
# on (the first opaque background up the tree, translucent ones blended over it), and their contrast ratio.
# Disabled controls are skipped (WCAG exempts them; they are drawn at half opacity on purpose); a select counts
# its shown option, a text or number input its value.
CONTRAST = r"""(selector) => {
  const parse = (c) => {  // rgb(a) in 0..255, or color(srgb ...) in 0..1 (what color-mix() computes to)
    const numbers = (text) => text.split(/[ ,/]+/).filter(Boolean).map(Number);
    let m = c.match(/^rgba?\(([^)]+)\)/);
    if (m) {
      const [r, g, b, a = 1] = numbers(m[1]);
      return [r, g, b, a];
    }
    m = c.match(/^color\(srgb ([^)]+)\)/);
    if (m) {
      const [r, g, b, a = 1] = numbers(m[1]);
      return [r * 255, g * 255, b * 255, a];
    }
    throw new Error(`unexpected colour ${c}`);
  };
  const over = (top, bottom) => top.slice(0, 3).map((v, i) => v * top[3] + bottom[i] * (1 - top[3])).concat(1);
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    return layers.reduceRight((below, layer) => over(layer, below), [255, 255, 255, 1]);
  };
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const results = [];
  for (const root of document.querySelectorAll(selector)) {
    for (const el of [root, ...root.querySelectorAll('*')]) {
      const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent.trim()).join('');
      const typed = ['text', 'number', 'search'].includes(el.type);
      const text = el.tagName === 'SELECT' ? el.selectedOptions[0]?.text
        : el.tagName === 'INPUT' ? typed && el.value : own;
      if (!text || !el.getClientRects().length || el.closest('[disabled], :disabled')) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden' || Number(style.opacity) === 0) continue;
      const bg = background(el);
      const fg = over(parse(style.color), bg);
      const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
      results.push({
        text: text.slice(0, 40),
        cls: el.className && el.className.baseVal === undefined ? el.className : el.tagName,
        ratio: Math.round(((hi + 0.05) / (lo + 0.05)) * 100) / 100,
      });
    }
  }
  return results;
}"""
