"""Loads a page pydeep-view wrote in the system Chromium (through
Playwright) and prints what a test checks, as one JSON document.

Usage: check_page.py report|svg|timing PATH [SEARCH]

report: console errors, network requests, the panels present, a click
        that zooms, a search that highlights SEARCH, the top table's rows
        and the flame graph's root title.
svg:    console errors of a flamegraph SVG (also in a window 10 pixels
        wide), its frame texts before and after a click zooms, and a
        search for SEARCH.
timing: milliseconds to first contentful paint and to the report's
        script having drawn every panel.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("PYDEEP_CHROMIUM", "/usr/bin/chromium")


def open_page(playwright, path, width=1400):
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
    )
    page = browser.new_page(viewport={"width": width, "height": 900})
    seen = {"errors": [], "warnings": [], "requests": []}

    def console(message):
        if message.type == "error":
            seen["errors"].append(message.text)
        elif message.type == "warning":
            seen["warnings"].append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on(
        "request",
        lambda request: None
        if request.url.startswith(("file:", "data:"))
        else seen["requests"].append(request.url),
    )
    page.goto("file://" + os.path.abspath(path), timeout=600_000)
    return browser, page, seen


def check_report(page, search):
    page.wait_for_selector("body[data-ready=true]", timeout=600_000)
    result = {}
    result["panels"] = page.evaluate(
        """() => {
        const count = (selector) => document.querySelectorAll(selector).length;
        return {
            flame: count("#flame .frame"),
            timeline: count("#timeline .timeline-row"),
            timeline_gaps: count("#timeline rect.gap"),
            timeline_missed: count("#timeline rect.missed"),
            top: count("#top-table tbody tr"),
            source: count("#sources table.source tr"),
            bytecode: count("#bytecode pre"),
            snapshots: count("#snapshots pre"),
            heap: count("#heap svg polyline.series"),
            growth: count("#heap pre.growth"),
        };
    }"""
    )
    result["root_title"] = page.evaluate(
        "() => document.querySelector('#flame .frame[data-node=\"0\"]').title"
    )
    # Zoom: click the widest frame two levels under a thread, if any.
    target = page.evaluate(
        """() => {
        const frames = [...document.querySelectorAll('#flame .frame')]
            .filter(f => parseFloat(f.style.top) >= 36 && parseFloat(f.style.width) < 0.95 * document.getElementById('flame').clientWidth);
        frames.sort((a, b) => parseFloat(b.style.width) - parseFloat(a.style.width));
        return frames.length ? frames[0].dataset.node : null;
    }"""
    )
    result["zoom_target"] = target
    if target is not None:
        page.click(f'#flame .frame[data-node="{target}"]')
        result["zoom"] = page.evaluate(
            """(node) => {
            const flame = document.getElementById('flame');
            const frame = flame.querySelector('.frame[data-node="' + node + '"]:not(.ancestor)');
            return {root: flame.dataset.root, width: frame ? parseFloat(frame.style.width) : null,
                    flame_width: flame.clientWidth};
        }""",
            target,
        )
        page.click("#reset")
    page.fill("#search", search)
    result["search"] = page.evaluate(
        """() => ({matches: document.querySelectorAll('#flame .frame.match').length,
                   matched: document.getElementById('matched').textContent})"""
    )
    result["top_rows"] = page.evaluate(
        """() => [...document.querySelectorAll('#top-table tbody tr')].map(tr => ({
            label: tr.dataset.label, own: Number(tr.dataset.own), total: Number(tr.dataset.total),
            cells: [...tr.children].map(td => td.textContent)}))"""
    )
    return result


def check_svg(page, search):
    page.wait_for_timeout(500)
    texts = lambda: page.evaluate(
        "() => [...document.querySelectorAll('#frames text')].map(t => t.textContent).filter(t => t)"
    )
    result = {"texts": texts()}
    target = page.evaluate(
        """() => {
        const groups = [...document.querySelectorAll('#frames > g')]
            .filter(g => parseFloat(g.querySelector('rect').getAttribute('width')) > 5
                      && parseFloat(g.querySelector('rect').getAttribute('width')) < 90);
        if (!groups.length) return null;
        groups[0].id = 'zoom-target';
        return groups[0].querySelector('title').textContent;
    }"""
    )
    result["zoom_target"] = target
    if target is not None:
        page.click("#zoom-target")
        page.wait_for_timeout(200)
        result["zoomed_width"] = page.evaluate(
            "() => document.querySelector('#zoom-target rect').getAttribute('width')"
        )
        result["texts_after_zoom"] = texts()
    page.evaluate("(term) => search(term)", search)
    result["matched"] = page.evaluate("() => document.getElementById('matched').textContent")
    return result


def timing(page):
    page.wait_for_selector("body[data-ready=true]", timeout=600_000)
    return page.evaluate(
        """() => {
        const paint = performance.getEntriesByName('first-contentful-paint')[0];
        return {first_contentful_paint_ms: paint ? paint.startTime : null,
                ready_ms: performance.now()};
    }"""
    )


def main():
    mode, path = sys.argv[1], sys.argv[2]
    search = sys.argv[3] if len(sys.argv) > 3 else "spin"
    with sync_playwright() as playwright:
        browser, page, seen = open_page(playwright, path)
        if mode == "report":
            result = check_report(page, search)
        elif mode == "svg":
            result = check_svg(page, search)
        else:
            result = timing(page)
        page.wait_for_timeout(200)
        result.update(seen)
        browser.close()
        if mode == "svg":
            # A window narrower than the graph's padding.
            browser, page, seen = open_page(playwright, path, width=10)
            page.wait_for_timeout(500)
            result["errors"] += seen["errors"]
            browser.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
