% rebase('base.tpl')
<h1>Dashboard</h1>
% if config.get('error'):
<section class="banner banner-error" data-testid="config-error" role="alert">
  <h2>⚠ The last reload of jobs.yaml failed</h2>
  <p>The scheduler keeps running the previous configuration. Fix the file; it is reloaded on save.</p>
  <pre class="pre pre-error">{{config['error']}}</pre>
  <p><a href="/config">Configuration details →</a></p>
</section>
% end
% drift = config.get('drift')
% if drift:
<section class="banner banner-warn" data-testid="config-drift" role="status">
  <h2>jobs.yaml here differs from the leader's</h2>
  <p>This node's file ({{drift['this_hash'][:12]}}) is not the one the leader {{drift.get('leader') or ''}} applied ({{drift['leader_hash'][:12]}}). The leader's jobs run; copy the same file to every node.</p>
</section>
% end
<section class="cards" data-testid="status">
  <div class="card">
    <h2 class="card-title">Scheduler</h2>
    <p class="big"><span class="badge b-{{status.get('scheduler', 'unknown')}}">{{status.get('scheduler', 'unknown')}}</span></p>
    <p class="muted">node {{status.get('node', '')}} · {{status.get('role', '')}}{{' · leader ' + status['leader'] if status.get('leader') and status.get('leader') != status.get('node') else ''}}</p>
    <p class="muted">up {{h['span'](status.get('uptime_s') or 0)}} · v{{status.get('version', '')}}</p>
    % if status.get('active_runs'):
    <p><a href="/runs?status=running">{{status['active_runs']}} active run(s)</a></p>
    % end
  </div>
  <div class="card">
    <h2 class="card-title">Jobs</h2>
    <p class="big"><a href="/jobs">{{status.get('jobs', {}).get('total', 0)}}</a></p>
    <ul class="counts">
      % for state in h['job_states']:
      <li><a href="/jobs?state={{state}}"><span class="badge b-{{state}}">{{state}}</span> {{status.get('jobs', {}).get(state, 0)}}</a></li>
      % end
    </ul>
  </div>
  <div class="card">
    <h2 class="card-title">Runs, last 24 h</h2>
    <ul class="counts">
      % for name in h['run_statuses']:
      % if status.get('runs_24h', {}).get(name):
      <li><a href="/runs?status={{name}}"><span class="badge b-{{name}}">{{name}}</span> {{status['runs_24h'][name]}}</a></li>
      % end
      % end
    </ul>
    % if not any(status.get('runs_24h', {}).values()):
    <p class="muted">No runs in the last 24 hours.</p>
    % end
  </div>
  <div class="card">
    <h2 class="card-title">Configuration</h2>
    % if config.get('error'):
    <p class="big"><span class="badge b-failed">reload failed</span></p>
    % else:
    <p class="big"><span class="badge b-succeeded">loaded</span></p>
    % end
    <p class="muted mono small">{{config.get('path', '')}}</p>
    <p class="muted">{{config.get('jobs', 0)}} jobs from the file · <a href="/config">details</a></p>
  </div>
</section>

<section class="panel" data-testid="nodes">
  <div class="panel-head">
    <h2>Nodes</h2>
    <p class="muted">Every task-scheduler process on this database. The leader fires the schedule; every node runs work.</p>
  </div>
  <div class="table-wrap">
  <table class="table nodes-table">
    <thead><tr><th>Node</th><th>Role</th><th>Host</th><th>Labels</th><th>Running</th><th>Heartbeat</th><th>Version</th></tr></thead>
    <tbody>
    % for node in nodes:
      <tr data-testid="node-row" data-node-id="{{node['id']}}" data-role="{{node['role']}}" class="{{'' if node['alive'] else 'node-dead'}}">
        <td data-label="Node" class="mono">{{node['id']}}</td>
        <td data-label="Role"><span class="badge b-{{node['role'] if node['alive'] else 'interrupted'}}">{{node['role'] if node['alive'] else 'silent'}}</span></td>
        <td data-label="Host">{{node['host']}} · pid {{node['pid']}}</td>
        <td data-label="Labels">{{', '.join(node['labels']) or '—'}}</td>
        <td data-label="Running">{{node['running']}}</td>
        <td data-label="Heartbeat">{{h['span'](node['heartbeat_age_s'])}} ago</td>
        <td data-label="Version">{{node['version']}}</td>
      </tr>
    % end
    </tbody>
  </table>
  </div>
</section>

<section class="panel" data-testid="timeline">
  <div class="panel-head">
    <h2>Timeline</h2>
    <p class="muted">Runs of the last 24 hours and fires due in the next 6 hours, one lane per job, most recently active first.</p>
  </div>
  <ul class="legend" aria-label="Legend">
    % for name in ('succeeded', 'failed', 'timeout', 'running', 'interrupted', 'cancelled', 'missed'):
    <li><span class="badge b-{{name}}">{{name}}</span></li>
    % end
    <li><span class="legend-fire" aria-hidden="true">◆</span> next fire</li>
  </ul>
  % if timeline['lanes']:
  <div class="timeline-x">
    <svg class="timeline-axis" viewBox="0 0 {{timeline['width']}} 22" width="{{timeline['width']}}" height="22" aria-hidden="true">
      % for tick in timeline['ticks']:
      <text class="tick-label" x="{{tick['x']}}" y="15">{{tick['label']}}</text>
      % end
      <text class="now-label" x="{{timeline['now_x']}}" y="15">now</text>
    </svg>
    <div class="timeline-y">
      <svg class="timeline" viewBox="0 0 {{timeline['width']}} {{timeline['height']}}" width="{{timeline['width']}}" height="{{timeline['height']}}" role="img" aria-label="Timeline of runs per job">
        <defs>
          <pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
            <rect class="hatch-bg" width="6" height="6"></rect>
            <rect class="hatch-fg" width="2.5" height="6"></rect>
          </pattern>
        </defs>
        % for lane in timeline['lanes']:
        <g class="lane lane-{{lane['state']}}">
          <rect class="lane-bg" x="0" y="{{lane['y']}}" width="{{timeline['width']}}" height="{{lane['height']}}"></rect>
          <a href="/jobs/{{lane['job_id']}}"><title>{{lane['job_id']}} ({{lane['state']}})</title><text class="lane-label" x="8" y="{{lane['text_y']}}">{{lane['label']}}</text></a>
        </g>
        % end
        % for tick in timeline['ticks']:
        <line class="grid" x1="{{tick['x']}}" y1="0" x2="{{tick['x']}}" y2="{{timeline['height']}}"></line>
        % end
        <line class="now" x1="{{timeline['now_x']}}" y1="0" x2="{{timeline['now_x']}}" y2="{{timeline['height']}}"></line>
        % for lane in timeline['lanes']:
        % for bar in lane['bars']:
        <a href="{{bar['href']}}"><rect class="bar bar-{{bar['status']}}" x="{{bar['x']}}" y="{{bar['y']}}" width="{{bar['w']}}" height="{{bar['h']}}" rx="2"><title>{{bar['title']}}</title></rect></a>
        % end
        % for mark in lane['marks']:
        <polygon class="fire" points="{{mark['points']}}"><title>{{mark['title']}}</title></polygon>
        % end
        % end
      </svg>
    </div>
  </div>
  % else:
  <p class="empty">No jobs yet. <a href="/jobs/new">Create one</a> or add it to jobs.yaml.</p>
  % end
</section>
