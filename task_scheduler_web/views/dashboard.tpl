% rebase('base.tpl')
<h1>{{t('dash.heading')}}</h1>
% if config.get('error'):
<section class="banner banner-error" data-testid="config-error" role="alert">
  <h2>⚠ {{t('dash.config_failed')}}</h2>
  <p>{{t('dash.config_failed_intro')}}</p>
  % include('_config_errors.tpl')
  <p><a href="/config">{{t('dash.config_details')}}</a></p>
</section>
% end
% drift = config.get('drift')
% if drift:
<section class="banner banner-warn" data-testid="config-drift" role="status">
  <h2>{{t('dash.drift_heading')}}</h2>
  <p>{{t('dash.drift', this=drift['this_hash'][:12], leader=drift.get('leader') or '', theirs=drift['leader_hash'][:12])}}</p>
</section>
% end
<section class="cards" data-testid="status" data-live-region="status">
  <div class="card">
    <h2 class="card-title">{{t('dash.scheduler')}}</h2>
    <p class="big"><span class="badge b-{{status.get('scheduler', 'unknown')}}">{{h['word']('scheduler', status.get('scheduler', 'unknown'))}}</span></p>
    <p class="muted">{{t('dash.node', node=status.get('node', ''), role=h['word']('role', status.get('role', '')))}}{{t('dash.leader', leader=status['leader']) if status.get('leader') and status.get('leader') != status.get('node') else ''}}</p>
    <p class="muted">{{t('dash.uptime', span=h['span'](status.get('uptime_s') or 0), version=status.get('version', ''))}}</p>
    % if status.get('active_runs'):
    <p><a href="/runs?status=running">{{t('dash.active_runs', n=status['active_runs'])}}</a></p>
    % end
  </div>
  <div class="card">
    <h2 class="card-title">{{t('dash.jobs')}}</h2>
    <p class="big"><a href="/jobs">{{status.get('jobs', {}).get('total', 0)}}</a></p>
    <ul class="counts">
      % for state in h['job_states']:
      % if state != 'finished' or status.get('jobs', {}).get(state):
      <li><a href="/jobs?state={{state}}"><span class="badge b-{{state}}">{{h['word']('state', state)}}</span> {{status.get('jobs', {}).get(state, 0)}}</a></li>
      % end
      % end
    </ul>
  </div>
  <div class="card">
    <h2 class="card-title">{{t('dash.runs_24h')}}</h2>
    <ul class="counts">
      % for name in h['run_statuses']:
      % if status.get('runs_24h', {}).get(name):
      <li><a href="/runs?status={{name}}"><span class="badge b-{{name}}">{{h['word']('status', name)}}</span> {{status['runs_24h'][name]}}</a></li>
      % end
      % end
    </ul>
    % if not any(status.get('runs_24h', {}).values()):
    <p class="muted">{{t('dash.no_runs_24h')}}</p>
    % end
  </div>
  <div class="card">
    <h2 class="card-title">{{t('dash.config')}}</h2>
    % if config.get('error'):
    <p class="big"><span class="badge b-failed">{{t('config.state_failed')}}</span></p>
    % else:
    <p class="big"><span class="badge b-succeeded">{{t('config.state_loaded')}}</span></p>
    % end
    <p class="muted mono small">{{config.get('path', '')}}</p>
    <p class="muted">{{t('dash.config_jobs', n=config.get('jobs', 0))}} · <a href="/config">{{t('dash.details')}}</a></p>
  </div>
</section>

<div data-live-region="sla">
% if sla:
<section class="panel" data-testid="sla-breaches">
  <div class="panel-head">
    <h2>{{t('dash.sla')}}</h2>
    <p class="muted">{{t('dash.sla_intro')}}</p>
  </div>
  <div class="table-wrap">
  <table class="table">
    <thead><tr><th>{{t('dash.sla_job')}}</th><th>{{t('note.event')}}</th><th>{{t('run.sla_detected')}}</th><th>{{t('run.sla_detail')}}</th></tr></thead>
    <tbody>
    % for breach in sla:
      <tr data-testid="sla-breach" data-job-id="{{breach['job_id']}}" data-event="{{breach['event']}}">
        <td data-label="{{t('dash.sla_job')}}"><a class="mono" href="/jobs/{{breach['job_id']}}">{{breach['job_id']}}</a></td>
        <td data-label="{{t('note.event')}}"><a href="/runs/{{breach['run_id']}}" class="badge-link"><span class="badge b-sla">{{h['word']('event', breach['event'])}}</span></a></td>
        <td data-label="{{t('run.sla_detected')}}">
          % include('_time.tpl', iso=breach['detected_at'])
        </td>
        <td data-label="{{t('run.sla_detail')}}" class="small" title="{{breach['detail']}}">{{t('sla.what.' + breach['event'])}}<br><span class="muted mono">{{breach['detail']}}</span></td>
      </tr>
    % end
    </tbody>
  </table>
  </div>
</section>
% end
</div>

<section class="panel" data-testid="nodes" data-live-region="nodes">
  <div class="panel-head">
    <h2>{{t('dash.nodes')}}</h2>
    <p class="muted">{{t('dash.nodes_intro')}}</p>
  </div>
  <div class="table-wrap">
  <table class="table nodes-table">
    <thead><tr><th>{{t('nodes.node')}}</th><th>{{t('nodes.role')}}</th><th>{{t('nodes.host')}}</th><th>{{t('nodes.labels')}}</th><th>{{t('nodes.running')}}</th><th>{{t('nodes.heartbeat')}}</th><th>{{t('nodes.version')}}</th></tr></thead>
    <tbody>
    % for node in nodes:
      <tr data-testid="node-row" data-node-id="{{node['id']}}" data-role="{{node['role']}}" class="{{'' if node['alive'] else 'node-dead'}}">
        <td data-label="{{t('nodes.node')}}" class="mono">{{node['id']}}</td>
        <td data-label="{{t('nodes.role')}}"><span class="badge b-{{node['role'] if node['alive'] else 'interrupted'}}">{{h['word']('role', node['role'] if node['alive'] else 'silent')}}</span></td>
        <td data-label="{{t('nodes.host')}}">{{t('nodes.host_pid', host=node['host'], pid=node['pid'])}}</td>
        <td data-label="{{t('nodes.labels')}}">{{', '.join(node['labels']) or '—'}}</td>
        <td data-label="{{t('nodes.running')}}">{{node['running']}}</td>
        <td data-label="{{t('nodes.heartbeat')}}">{{h['since'](node['heartbeat_age_s'])}}</td>
        <td data-label="{{t('nodes.version')}}">{{node['version']}}</td>
      </tr>
    % end
    </tbody>
  </table>
  </div>
</section>

% include('_timeline.tpl')
