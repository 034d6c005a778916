//! The terminal view: C xentop's screen and keys, on ratatui.
//!
//! The summary, the table (the sort column in bold, the selected domain reversed) and the
//! bottom line of keys, as xentop draws them. Keys as in xentop: `d` delay (typed, Enter),
//! `n` networks, `b` disks, `v` vCPUs, `r` repeat header, `s` next sort column, Up/Down,
//! Ctrl-L, `q`/Esc quit; and `Enter` a domain's details (Esc or Enter back). Like xentop,
//! a key press refreshes at once; otherwise every delay.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::{DefaultTerminal, Frame as TermFrame};
use xen_types::DomId;
use xentop::format::{self, Field, Frame, Options, Widths};
use xentop::{Collector, Node};

/// What is on the screen and what the keys changed.
pub struct App {
    opts: Options,
    delay: Duration,
    /// The domain the cursor is on, by position in display order.
    selected: usize,
    /// Typing a new delay: the text so far.
    prompt: Option<String>,
    /// Showing one domain's details.
    detail: Option<DomId>,
    widths: Widths,
    prev: Option<(Node, Instant)>,
    cur: Option<(Node, Instant)>,
}

/// What a key did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Quit,
    Refresh,
}

impl App {
    fn new(opts: Options, delay: Duration) -> App {
        App {
            opts,
            delay,
            selected: 0,
            prompt: None,
            detail: None,
            widths: Widths::default(),
            prev: None,
            cur: None,
        }
    }

    fn sample(&mut self, c: &Collector) -> Result<(), String> {
        let node = c
            .node()
            .map_err(|e| format!("Failed to retrieve statistics from libxenstat: {e}"))?;
        self.prev = self.cur.take();
        self.cur = Some((node, Instant::now()));
        Ok(())
    }

    fn frame(&self) -> Option<Frame<'_>> {
        frame_of(&self.cur, &self.prev)
    }

    fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> Outcome {
        if let Some(p) = &mut self.prompt {
            match code {
                KeyCode::Enter => {
                    // xentop's set_delay: a positive whole number, else unchanged.
                    if let Ok(d) = p.trim().parse::<u64>() {
                        if d > 0 {
                            self.delay = Duration::from_secs(d);
                        }
                    }
                    self.prompt = None;
                }
                KeyCode::Esc => self.prompt = None,
                KeyCode::Backspace => {
                    p.pop();
                }
                KeyCode::Char(c) if !c.is_control() && p.len() < 79 => p.push(c),
                _ => {}
            }
            return Outcome::Refresh;
        }
        if self.detail.is_some() {
            match code {
                KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => self.detail = None,
                KeyCode::Char('q' | 'Q') => return Outcome::Quit,
                _ => {}
            }
            return Outcome::Refresh;
        }
        match code {
            KeyCode::Char('l') if mods.contains(KeyModifiers::CONTROL) => {}
            KeyCode::Char('n' | 'N') => self.opts.networks ^= true,
            KeyCode::Char('b' | 'B') => self.opts.vbds ^= true,
            KeyCode::Char('r' | 'R') => self.opts.repeat_header ^= true,
            KeyCode::Char('s' | 'S') => self.opts.sort = self.opts.sort.next(),
            KeyCode::Char('v' | 'V') => self.opts.vcpus ^= true,
            KeyCode::Char('d' | 'D') => self.prompt = Some(String::new()),
            KeyCode::Down => self.selected += 1,
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Enter => {
                if let Some(f) = self.frame() {
                    let doms = format::sorted(&f, &self.opts);
                    self.detail = doms
                        .get(self.selected.min(doms.len().saturating_sub(1)))
                        .map(|d| d.id());
                }
            }
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => return Outcome::Quit,
            _ => {}
        }
        Outcome::Refresh
    }

    fn draw(&mut self, t: &mut TermFrame<'_>) {
        let Some((node, _)) = self.cur.as_ref() else {
            return;
        };
        let time = chrono::Local::now().format("%H:%M:%S").to_string();
        let summary = format::summary(node, &time);
        let [top, body, bottom] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(t.area());
        t.render_widget(Paragraph::new(summary), top);
        let lines = match self.detail {
            Some(id) => self.detail_lines(id),
            None => self.table_lines(body.height as usize),
        };
        t.render_widget(Paragraph::new(lines), body);
        t.render_widget(Paragraph::new(self.bottom_line()), bottom);
    }

    fn table_lines(&mut self, height: usize) -> Vec<Line<'static>> {
        let Some(frame) = frame_of(&self.cur, &self.prev) else {
            return Vec::new();
        };
        let opts = self.opts;
        let doms = format::sorted(&frame, &opts);
        self.selected = self.selected.min(doms.len().saturating_sub(1));
        // Scroll so that the selected domain's line is on the screen.
        let first = self.selected.saturating_sub(height.saturating_sub(2));
        let mut widths = self.widths.clone();
        widths.fit(&doms[first.min(doms.len())..], opts.full_name);
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let header = |w: &Widths| {
            let mut spans = Vec::new();
            for (i, f) in Field::ALL.iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw(" "));
                }
                let text = format!("{:>1$}", f.header(), w.get(*f));
                let style = if *f == opts.sort {
                    bold
                } else {
                    Style::default()
                };
                spans.push(Span::styled(text, style));
            }
            Line::from(spans).style(Style::default().add_modifier(Modifier::REVERSED))
        };
        let mut lines = Vec::new();
        for (i, d) in doms.iter().enumerate().skip(first) {
            if i == first || opts.repeat_header {
                lines.push(header(&widths));
            }
            let mut spans = Vec::new();
            for (k, f) in Field::ALL.iter().enumerate() {
                if k > 0 {
                    spans.push(Span::raw(" "));
                }
                let style = if *f == opts.sort {
                    bold
                } else {
                    Style::default()
                };
                spans.push(Span::styled(
                    format::cell(*f, &frame, d, &widths, &opts),
                    style,
                ));
            }
            let mut line = Line::from(spans);
            if i == self.selected {
                line = line.style(Style::default().add_modifier(Modifier::REVERSED));
            }
            lines.push(line);
            let mut extra = String::new();
            if opts.vcpus {
                extra.push_str(&format::vcpu_lines(d));
            }
            if opts.networks {
                extra.push_str(&format::network_lines(d));
            }
            if opts.vbds {
                extra.push_str(&format::vbd_lines(d));
            }
            lines.extend(extra.lines().map(|l| Line::raw(l.to_string())));
        }
        self.widths = widths;
        lines
    }

    fn detail_lines(&self, id: DomId) -> Vec<Line<'static>> {
        let Some(frame) = self.frame() else {
            return Vec::new();
        };
        let Some(d) = frame.node.domain(id) else {
            return vec![Line::raw(format!("Domain {id} is gone (Esc: back)"))];
        };
        let state: String = format::cell(Field::State, &frame, d, &self.widths, &self.opts);
        let max = d
            .max_mem()
            .map_or("no limit".to_string(), |m| format!("{}k", m / 1024));
        let mut text = format!(
            "Domain {} ({})   state {}   uuid {}\n\
             CPU {} s, {:.1}%   vCPUs {} ({} online)\n\
             Memory {}k of {} max   SSID {}\n\
             Networks {}   sent {}k, received {}k\n\
             Disks {}\n\n",
            d.name,
            id,
            state,
            d.info.handle,
            d.cpu_ns() / 1_000_000_000,
            frame.cpu_pct(d),
            d.num_vcpus(),
            d.info.online_vcpus,
            d.cur_mem() / 1024,
            max,
            d.ssid(),
            d.networks.len(),
            d.net_bytes(false) / 1024,
            d.net_bytes(true) / 1024,
            d.vbds.len(),
        );
        text.push_str(&format::vcpu_lines(d));
        text.push_str(&format::network_lines(d));
        text.push_str(&format::vbd_lines(d));
        text.lines().map(|l| Line::raw(l.to_string())).collect()
    }

    fn bottom_line(&self) -> Line<'static> {
        if let Some(p) = &self.prompt {
            return Line::raw(format!("  Delay(sec): {p}"));
        }
        if self.detail.is_some() {
            return Line::raw("  Esc/Enter: back  Q: quit");
        }
        let rev = Style::default().add_modifier(Modifier::REVERSED);
        let key = |k: &'static str| Span::styled(k, rev);
        Line::from(vec![
            Span::raw("  "),
            key("D"),
            Span::raw("elay  "),
            key("N"),
            Span::raw("etworks  v"),
            key("B"),
            Span::raw("ds  "),
            key("V"),
            Span::raw("CPUs  "),
            key("R"),
            Span::raw("epeat header  "),
            key("S"),
            Span::raw(format!("ort order ({})  ", self.opts.sort.header())),
            Span::raw("Enter: details  "),
            key("Q"),
            Span::raw("uit  "),
        ])
    }
}

/// The frame of sample `cur` after `prev`.
fn frame_of<'a>(
    cur: &'a Option<(Node, Instant)>,
    prev: &'a Option<(Node, Instant)>,
) -> Option<Frame<'a>> {
    let (node, at) = cur.as_ref()?;
    Some(Frame {
        node,
        prev: prev.as_ref().map(|p| &p.0),
        elapsed: prev.as_ref().map_or(Duration::ZERO, |p| *at - p.1),
    })
}

/// Runs the view until `q` (or `iterations` refreshes, if given and not 0).
pub fn run(
    collector: &Collector,
    opts: Options,
    delay: Duration,
    iterations: Option<u32>,
) -> Result<(), String> {
    let mut app = App::new(opts, delay);
    app.sample(collector)?;
    let mut terminal = ratatui::try_init().map_err(|e| format!("terminal: {e}"))?;
    let r = event_loop(&mut terminal, &mut app, collector, iterations);
    ratatui::restore();
    r
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    collector: &Collector,
    iterations: Option<u32>,
) -> Result<(), String> {
    let mut shown = 0u32;
    let mut last = Instant::now();
    loop {
        terminal
            .draw(|t| app.draw(t))
            .map_err(|e| format!("terminal: {e}"))?;
        shown += 1;
        if iterations.is_some_and(|n| n != 0 && shown >= n) {
            return Ok(());
        }
        // Wait for a key or the delay, whichever first.
        loop {
            let left = app.delay.saturating_sub(last.elapsed());
            if left.is_zero() {
                break;
            }
            if event::poll(left).map_err(|e| e.to_string())? {
                if let Event::Key(k) = event::read().map_err(|e| e.to_string())? {
                    if k.kind != KeyEventKind::Press {
                        continue;
                    }
                    if app.key(k.code, k.modifiers) == Outcome::Quit {
                        return Ok(());
                    }
                    break;
                }
                // A resize: redraw with the same sample.
                terminal
                    .draw(|t| app.draw(t))
                    .map_err(|e| format!("terminal: {e}"))?;
            }
        }
        app.sample(collector)?;
        last = Instant::now();
    }
}
