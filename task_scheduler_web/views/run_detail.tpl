% rebase('base.tpl')
% if active:
<article data-testid="run-detail" data-run-id="{{run['id']}}" data-status="{{run['status']}}" data-autorefresh="500" data-offset-stdout="{{offsets['stdout']}}" data-offset-stderr="{{offsets['stderr']}}">
% else:
<article data-testid="run-detail" data-run-id="{{run['id']}}" data-status="{{run['status']}}">
% end
  <div class="title-row">
    <div>
      <p class="crumbs"><a href="/runs">{{t('nav.runs')}}</a> / <a href="/jobs/{{run['job_id']}}">{{run['job_id']}}</a> /</p>
      <h1>{{t('run.heading')}} <span class="mono">{{run['id']}}</span></h1>
    </div>
    <div class="title-actions">
      % include('_badge.tpl', status=run['status'])
      % if active and h['can']('operator'):
      <form method="post" action="/runs/{{run['id']}}/cancel">
        % include('_csrf.tpl')
        <button type="submit" class="btn btn-danger" data-testid="action-cancel">{{t('run.cancel')}}</button>
      </form>
      % elif h['can']('operator'):
      <form method="post" action="/runs/{{run['id']}}/rerun">
        % include('_csrf.tpl')
        <button type="submit" class="btn" data-testid="action-rerun">{{t('run.rerun')}}</button>
      </form>
      % end
    </div>
  </div>
  % if active:
  <p class="note live"><span class="pulse" aria-hidden="true"></span> {{t('run.live', status=h['word']('status', run['status']))}} <noscript>{{t('run.live_nojs')}}</noscript></p>
  % end
  <section class="panel">
    <dl class="facts facts-wide">
      <dt>{{t('run.job')}}</dt><dd><a href="/jobs/{{run['job_id']}}" class="mono">{{run['job_id']}}</a></dd>
      <dt>{{t('run.status')}}</dt><dd data-testid="run-status" data-status="{{run['status']}}">{{h['word']('status', run['status'])}}</dd>
      <dt>{{t('run.trigger')}}</dt><dd>{{h['word']('trigger', run.get('trigger', ''))}}</dd>
      <dt>{{t('run.attempt')}}</dt><dd>{{run.get('attempt') or 1}}</dd>
      <dt>{{t('run.node')}}</dt><dd class="mono">{{run.get('node') or '—'}}</dd>
      % if run.get('waiting'):
      <dt>{{t('run.waiting')}}</dt><dd data-testid="run-waiting">{{h['message'](run['waiting'])}}</dd>
      % end
      <dt>{{t('run.scheduled')}}</dt><dd>
        % include('_time.tpl', iso=run.get('scheduled_at'))
      </dd>
      <dt>{{t('run.started')}}</dt><dd>
        % include('_time.tpl', iso=run.get('started_at'))
      </dd>
      <dt>{{t('run.finished')}}</dt><dd>
        % include('_time.tpl', iso=run.get('finished_at'))
      </dd>
      % if active and run.get('started_at'):
      <dt>{{t('run.elapsed')}}</dt><dd data-testid="run-elapsed" data-started="{{run['started_at']}}">{{h['elapsed'](run['started_at'])}}</dd>
      % else:
      <dt>{{t('run.duration')}}</dt><dd>{{h['duration'](run.get('duration_s'))}}</dd>
      % end
      <dt>{{t('run.exit_code')}}</dt><dd data-testid="run-exit-code">{{'—' if run.get('exit_code') is None else run['exit_code']}}</dd>
      % if run.get('started_by'):
      <dt>{{t('run.started_by')}}</dt><dd class="mono" data-testid="run-started-by">{{run['started_by']}}</dd>
      % end
      % if run.get('parent_run'):
      <dt>{{t('run.step_of')}}</dt><dd data-testid="run-parent"><a class="mono" href="/runs/{{run['parent_run']}}">{{run['parent_run']}}</a> · <span class="mono">{{run['step_id']}}</span></dd>
      % end
      % if run.get('upstream_run'):
      <dt>{{t('run.upstream')}}</dt><dd><a class="mono" href="/runs/{{run['upstream_run']}}" data-testid="run-upstream">{{run['upstream_run']}}</a></dd>
      % end
      % if run.get('rerun_of'):
      <dt>{{t('run.rerun_of')}}</dt><dd><a class="mono" href="/runs/{{run['rerun_of']}}">{{run['rerun_of']}}</a></dd>
      % end
      % if run.get('params'):
      <dt>{{t('run.params')}}</dt><dd><code class="mono" data-testid="run-params">{{h['json'](run['params'])}}</code></dd>
      % end
    </dl>
  </section>
  % if get('graph'):
  % include('_step_graph.tpl')
  % end
  % if run.get('steps'):
  % include('_steps.tpl')
  % end
  % if run.get('error'):
  <section class="panel">
    <h2>{{t('run.error')}}</h2>
    <pre class="pre pre-error" data-testid="run-error">{{run['error']}}</pre>
  </section>
  % end
  % if run.get('result') is not None:
  <section class="panel">
    <h2>{{t('run.result')}}</h2>
    <pre class="pre" data-testid="run-result">{{h['pretty_json'](run['result'])}}</pre>
  </section>
  % end
  % if run.get('truncated'):
  <p class="note warn">✂ {{t('run.truncated')}}</p>
  % end
  % for stream in ('stdout', 'stderr'):
  <section class="panel">
    <div class="panel-head">
      <h2>{{stream}}</h2>
      <a class="btn btn-quiet" href="/runs/{{run['id']}}/{{stream}}" download data-testid="download-{{stream}}">{{t('run.download')}}</a>
    </div>
    <pre class="pre output{{' live' if active else ''}}" data-testid="run-{{stream}}" data-empty="{{t('run.no_output')}}">{{run.get(stream) or ''}}</pre>
  </section>
  % end
  % if run.get('sla_breaches'):
  <section class="panel" data-testid="run-sla">
    <h2>{{t('run.sla')}}</h2>
    <div class="table-wrap">
    <table class="table">
      <thead><tr><th>{{t('note.event')}}</th><th>{{t('run.sla_due')}}</th><th>{{t('run.sla_detected')}}</th><th>{{t('run.sla_detail')}}</th></tr></thead>
      <tbody>
      % for breach in run['sla_breaches']:
        <tr data-testid="sla-row" data-event="{{breach['event']}}">
          <td data-label="{{t('note.event')}}"><span class="badge b-sla">{{h['word']('event', breach['event'])}}</span></td>
          <td data-label="{{t('run.sla_due')}}">
            % include('_time.tpl', iso=breach['due_at'])
          </td>
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
  % if run.get('notifications'):
  <section class="panel" data-testid="run-notifications">
    <h2>{{t('run.notifications')}}</h2>
    <div class="table-wrap">
    <table class="table">
      <thead><tr><th>{{t('note.event')}}</th><th>{{t('note.target')}}</th><th>{{t('note.status')}}</th><th>{{t('note.attempts')}}</th><th>{{t('note.last')}}</th></tr></thead>
      <tbody>
      % for note in run['notifications']:
        <tr data-testid="notification-row" data-status="{{note['status']}}">
          <td data-label="{{t('note.event')}}">{{h['word']('event', note['event'])}}</td>
          <td data-label="{{t('note.target')}}" class="mono small">{{note['target']}}</td>
          <td data-label="{{t('note.status')}}"><span class="badge b-{{ {'sent': 'succeeded', 'failed': 'failed'}.get(note['status'], 'queued') }}">{{h['word']('note', note['status'])}}</span></td>
          <td data-label="{{t('note.attempts')}}">{{note['attempts']}}</td>
          <td data-label="{{t('note.last')}}" class="small">{{note['log'][-1]['detail'] if note['log'] else '—'}}</td>
        </tr>
      % end
      </tbody>
    </table>
    </div>
  </section>
  % end
</article>
