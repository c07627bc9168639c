<section class="panel" data-testid="timeline" data-range="{{timeline['range']}}" data-live-region="timeline">
  <div class="panel-head">
    <h2>{{t('tl.heading')}}</h2>
    <nav class="range-picker" data-testid="timeline-range" aria-label="{{t('tl.range_label')}}">
      % for name in timeline['ranges']:
      % if name == timeline['range']:
      <a href="?range={{name}}" aria-current="true">{{t('tl.range.' + name)}}</a>
      % else:
      <a href="?range={{name}}">{{t('tl.range.' + name)}}</a>
      % end
      % end
    </nav>
  </div>
  <p class="muted small">{{t('tl.intro', range=t('tl.range.' + timeline['range']))}}</p>
  <ul class="legend" aria-label="{{t('tl.legend')}}">
    % for name in ('succeeded', 'failed', 'timeout', 'running', 'interrupted', 'cancelled', 'missed'):
    <li><span class="badge b-{{name}}">{{h['word']('status', name)}}</span></li>
    % end
    <li><span class="legend-dot" aria-hidden="true"></span> {{t('tl.short_run')}}</li>
    <li><span class="legend-bucket" aria-hidden="true">12</span> {{t('tl.dense')}}</li>
    <li><span class="legend-fire" aria-hidden="true">◆</span> {{t('tl.next_fire')}}</li>
  </ul>
  % if timeline['lanes']:
  <div class="tl">
    <div class="tl-grid tl-head">
      <span class="tl-corner"></span>
      <svg class="tl-axis" width="100%" height="34" aria-hidden="true">
        % for tick in timeline['ticks']:
        <line class="tick" x1="{{tick['x']}}%" x2="{{tick['x']}}%" y1="26" y2="34"></line>
        <text class="tick-label{{' tick-minor' if tick['minor'] else ''}}{{' tick-' + tick['anchor'] if tick['anchor'] else ''}}" x="{{tick['x']}}%" y="22">{{tick['label']}}</text>
        % end
        <line class="now" x1="{{timeline['now_x']}}%" x2="{{timeline['now_x']}}%" y1="16" y2="34"></line>
        <text class="now-label" x="{{timeline['now_x']}}%" y="11">{{t('tl.now')}}</text>
      </svg>
    </div>
    <div class="timeline-y">
      <div class="tl-grid">
        <svg class="tl-labels" width="100%" height="{{timeline['height']}}">
          % for lane in timeline['lanes']:
          <g class="lane lane-{{lane['state']}}{{' lane-failing' if lane['failing'] else ''}}{{' lane-running' if lane['running'] else ''}}">
            <rect class="lane-bg" x="0" y="{{lane['y']}}" width="100%" height="24"></rect>
            % if lane['failing']:
            <circle class="lane-flag flag-failed" cx="9" cy="{{lane['mid']}}" r="4"><title>{{h['word']('status', 'failed')}}</title></circle>
            % elif lane['running']:
            <circle class="lane-flag flag-running" cx="9" cy="{{lane['mid']}}" r="4"><title>{{h['word']('status', 'running')}}</title></circle>
            % end
            <a href="/jobs/{{lane['job_id']}}"><title>{{lane['title']}}</title><text class="lane-label" x="18" y="{{lane['text_y']}}">{{lane['label']}}</text></a>
          </g>
          % end
        </svg>
        <svg class="timeline" width="100%" height="{{timeline['height']}}" role="img" aria-label="{{t('tl.aria')}}">
          <defs>
            <pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
              <rect class="hatch-bg" width="6" height="6"></rect>
              <rect class="hatch-fg" width="2.5" height="6"></rect>
            </pattern>
          </defs>
          % for lane in timeline['lanes']:
          <rect class="lane-bg lane-bg-{{'odd' if lane['odd'] else 'even'}}" x="0" y="{{lane['y']}}" width="100%" height="24"></rect>
          % end
          % for tick in timeline['ticks']:
          <line class="grid" x1="{{tick['x']}}%" y1="0" x2="{{tick['x']}}%" y2="{{timeline['height']}}"></line>
          % end
          <line class="now" x1="{{timeline['now_x']}}%" y1="0" x2="{{timeline['now_x']}}%" y2="{{timeline['height']}}"></line>
          % for lane in timeline['lanes']:
          % if lane['buckets']:
          <g transform="translate(0 {{lane['y']}})">
          % for b in lane['buckets']:
          <a href="{{b['href']}}" class="tl-run tl-bucket" data-tip="{{b['title']}}"><rect class="bar bucket bar-{{b['status']}}" x="{{b['x']}}%" y="5" width="{{b['w']}}%" height="14" rx="1"></rect>
          % if b['label']:
          <text class="bucket-n" x="{{b['mid_x']}}%" y="16">{{b['n']}}</text>
          % end
          </a>
          % end
          </g>
          % end
          % for bar in lane['bars']:
          <a href="{{bar['href']}}" class="tl-run" data-tip="{{bar['title']}}"><rect class="bar bar-{{bar['status']}}" x="{{bar['x']}}%" y="{{lane['bar_y']}}" width="{{bar['w']}}%" height="14" rx="2"><title>{{bar['title']}}</title></rect></a>
          % end
          % for dot in lane['dots']:
          <a href="{{dot['href']}}" class="tl-run" data-tip="{{dot['title']}}"><svg x="{{dot['x']}}%" y="{{lane['mid']}}" overflow="visible"><rect class="bar run-dot bar-{{dot['status']}}" x="-2.5" y="-7" width="5" height="14" rx="2.5"><title>{{dot['title']}}</title></rect></svg></a>
          % end
          % if lane['band']:
          <rect class="fire-band" x="{{lane['band']['x']}}%" y="{{lane['band_y']}}" width="{{lane['band']['w']}}%" height="3"><title>{{lane['band']['title']}}</title></rect>
          % end
          % for fire in lane['fires']:
          <svg x="{{fire['x']}}%" y="{{lane['mid']}}" overflow="visible"><polygon class="fire" points="0,-6 5,0 0,6 -5,0"><title>{{fire['title']}}</title></polygon></svg>
          % end
          % end
        </svg>
      </div>
    </div>
  </div>
  % if timeline['truncated']:
  <p class="muted small">{{t('tl.truncated', n=timeline['max_runs'])}}</p>
  % end
  % else:
  <p class="empty">{{t('tl.no_jobs')}} <a href="/jobs/new">{{t('tl.create')}}</a></p>
  % end
</section>
