% rebase('base.tpl')
% if active:
<article data-testid="run-detail" data-run-id="{{run['id']}}" data-status="{{run['status']}}" data-autorefresh="1500">
% else:
<article data-testid="run-detail" data-run-id="{{run['id']}}" data-status="{{run['status']}}">
% end
  <div class="title-row">
    <div>
      <p class="crumbs"><a href="/runs">Runs</a> / <a href="/jobs/{{run['job_id']}}">{{run['job_id']}}</a> /</p>
      <h1>Run <span class="mono">{{run['id']}}</span></h1>
    </div>
    <div class="title-actions">
      % include('_badge.tpl', status=run['status'])
      % if active:
      <form method="post" action="/runs/{{run['id']}}/cancel">
        % include('_csrf.tpl')
        <button type="submit" class="btn btn-danger">Cancel</button>
      </form>
      % end
    </div>
  </div>
  % if active:
  <p class="note live"><span class="pulse" aria-hidden="true"></span> This run is {{run['status']}}; the page refreshes by itself. <noscript>Reload the page to see its progress.</noscript></p>
  % end
  <section class="panel">
    <dl class="facts facts-wide">
      <dt>Job</dt><dd><a href="/jobs/{{run['job_id']}}" class="mono">{{run['job_id']}}</a></dd>
      <dt>Status</dt><dd data-testid="run-status">{{run['status']}}</dd>
      <dt>Trigger</dt><dd>{{run.get('trigger', '')}}</dd>
      <dt>Attempt</dt><dd>{{run.get('attempt') or 1}}</dd>
      <dt>Node</dt><dd class="mono">{{run.get('node') or '—'}}</dd>
      % if run.get('waiting'):
      <dt>Waiting</dt><dd data-testid="run-waiting">{{run['waiting']}}</dd>
      % end
      <dt>Scheduled</dt><dd>
        % include('_time.tpl', iso=run.get('scheduled_at'))
      </dd>
      <dt>Started</dt><dd>
        % include('_time.tpl', iso=run.get('started_at'))
      </dd>
      <dt>Finished</dt><dd>
        % include('_time.tpl', iso=run.get('finished_at'))
      </dd>
      <dt>Duration</dt><dd>{{h['duration'](run.get('duration_s'))}}</dd>
      <dt>Exit code</dt><dd data-testid="run-exit-code">{{'—' if run.get('exit_code') is None else run['exit_code']}}</dd>
      <dt>Node</dt><dd>{{run.get('node') or '—'}}</dd>
    </dl>
  </section>
  % if run.get('error'):
  <section class="panel">
    <h2>Error</h2>
    <pre class="pre pre-error" data-testid="run-error">{{run['error']}}</pre>
  </section>
  % end
  % if run.get('truncated'):
  <p class="note warn">✂ Output was truncated: the head and the tail of each stream are kept, with a marker where the middle was cut.</p>
  % end
  % for stream in ('stdout', 'stderr'):
  <section class="panel">
    <div class="panel-head">
      <h2>{{stream}}</h2>
      <a class="btn btn-quiet" href="/runs/{{run['id']}}/{{stream}}" download>Download</a>
    </div>
    <pre class="pre output" data-testid="run-{{stream}}">{{run.get(stream) or ''}}</pre>
  </section>
  % end
</article>
