// What is cut off or overlapping on the page at the current viewport width, as sentences (none:
// the layout holds). Wide tables scroll sideways inside their own `.scroll` box by design, so
// what is inside one is not checked against the viewport. Checked, for every visible element
// outside those boxes:
// - the page itself does not scroll sideways (nothing reaches past the viewport's right edge);
// - the element lies within the viewport horizontally;
// - a block's content does not stick out of its box (a long word, a too-wide control);
// - no two controls, labels or figures overlap (neither containing the other).
// Run by selenium's execute_script: returns the list.
const width = document.documentElement.clientWidth;
const problems = [];
const name = (e) => e.tagName.toLowerCase() + (e.id ? `#${e.id}` : "")
  + (e.className && typeof e.className === "string" ? `.${e.className.trim().replace(/\s+/g, ".")}` : "")
  + ` "${(e.innerText || e.value || "").trim().slice(0, 40)}"`;
const shown = (e) => {
  const r = e.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== "hidden";
};

if (document.documentElement.scrollWidth > width + 1) {
  problems.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} px wide in a ${width} px viewport`);
}
const all = [...document.querySelectorAll("body *")].filter((e) => !e.closest(".scroll") && !e.parentElement.closest("#chart") && shown(e));
for (const e of all) {
  const r = e.getBoundingClientRect();
  if (r.left < -1 || r.right > width + 1) {
    problems.push(`${name(e)} spans ${Math.round(r.left)}..${Math.round(r.right)} px of a ${width} px viewport`);
  }
  const style = getComputedStyle(e);
  if (style.display !== "inline" && style.overflowX === "visible" && e.scrollWidth > e.clientWidth + 1
      && !["INPUT", "SELECT", "BUTTON", "METER", "TEXTAREA"].includes(e.tagName)) {
    problems.push(`${name(e)}: its content is ${e.scrollWidth} px wide in a ${e.clientWidth} px box`);
  }
}
const leaves = all.filter((e) => e.matches("h1, h2, h3, label, input, select, button, meter, output, dt, dd, li, caption, "
  + "#network, #address, #status, #notice, #health-text, #chart"));
for (let i = 0; i < leaves.length; i++) {
  const a = leaves[i].getBoundingClientRect();
  for (let j = i + 1; j < leaves.length; j++) {
    if (leaves[i].contains(leaves[j]) || leaves[j].contains(leaves[i])) continue;
    const b = leaves[j].getBoundingClientRect();
    const x = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const y = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (x > 1 && y > 1) problems.push(`${name(leaves[i])} overlaps ${name(leaves[j])} (${Math.round(x)} x ${Math.round(y)} px)`);
  }
}
return problems;
