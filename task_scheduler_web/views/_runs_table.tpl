% if runs:
<div class="table-wrap">
<table class="table runs-table">
  <thead>
    <tr><th>{{t('runs.col.run')}}</th><th>{{t('runs.col.job')}}</th><th>{{t('runs.col.status')}}</th><th>{{t('runs.col.trigger')}}</th><th>{{t('runs.col.started')}}</th><th>{{t('runs.col.duration')}}</th><th>{{t('runs.col.exit')}}</th><th>{{t('runs.col.node')}}</th></tr>
  </thead>
  <tbody>
  % for run in runs:
    <tr data-testid="run-row" data-run-id="{{run['id']}}" data-status="{{run['status']}}" class="{{'has-match' if run.get('match') else ''}}">
      <td data-label="{{t('runs.col.run')}}"><a href="/runs/{{run['id']}}" class="mono">{{run['id']}}</a></td>
      <td data-label="{{t('runs.col.job')}}"><a href="/jobs/{{run['job_id']}}">{{run['job_id']}}</a></td>
      <td data-label="{{t('runs.col.status')}}">
        % include('_badge.tpl', status=run['status'])
      </td>
      <td data-label="{{t('runs.col.trigger')}}">{{h['word']('trigger', run['trigger'])}}</td>
      <td data-label="{{t('runs.col.started')}}">
        % include('_time.tpl', iso=run.get('started_at') or run.get('scheduled_at'))
      </td>
      <td data-label="{{t('runs.col.duration')}}">{{h['duration'](run.get('duration_s'))}}</td>
      <td data-label="{{t('runs.col.exit')}}">{{'—' if run.get('exit_code') is None else run['exit_code']}}</td>
      <td data-label="{{t('runs.col.node')}}" class="mono small">{{run.get('node') or '—'}}</td>
    </tr>
    % if run.get('match'):
    <tr class="match-row" data-run-id="{{run['id']}}">
      <td colspan="8" data-testid="run-match" data-stream="{{run['match']['stream']}}"><span class="match-where">{{t('runs.match_where', stream=run['match']['stream'], line=run['match']['line_number'])}}</span> <code class="match-line">{{run['match']['parts'][0]}}<mark>{{run['match']['parts'][1]}}</mark>{{run['match']['parts'][2]}}</code></td>
    </tr>
    % end
  % end
  </tbody>
</table>
</div>
% include('_pager.tpl')
% else:
<p class="empty">{{t('runs.none')}}</p>
% end
